"""`shapes`: the built-in procedural image–caption data set, exactly as ../shared/SHAPES.md specifies.

A scene is one (or two) flat-filled shapes on a `size` x `size` canvas (size in {16, 32, 64}):
    colour in COLORS (6), shape in SHAPES (4), size in SIZES (bounding box w = round(frac * size)),
    position in POSITIONS (the 3 x 3 cell that holds the bounding-box centre).
Geometry in integer pixel coordinates, with (i, j) the row / column offset inside a w x w box:
    circle    (2j + 1 - w)^2 + (2i + 1 - w)^2 <= w^2          (a disc of diameter w)
    square    every pixel of the box
    triangle  |2j + 1 - w| <= i + 1                          (apex at the top centre, base = height = w)
    cross     a centred column and row of thickness max(1, w // 3)
The same geometry, stretched to an h x w box, is the template set of the graders `read_attributes`
and `read_scene`; `relation_holds` defines the relations between two boxes.

Determinism: every random number of example `index` is u(seed, split, index, k) for a fixed column k
(a counter-based hash, `_uniform`), so example i is identical whatever `n` or `start` asks for it,
and a whole batch is drawn in a few vectorised numpy operations.

Tensor names: N examples, S canvas side, k random columns.
"""

from __future__ import annotations

from functools import cache, lru_cache
from typing import Any

import numpy as np
from scipy import ndimage

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (230, 25, 25),
    "green": (25, 190, 25),
    "blue": (30, 60, 230),
    "yellow": (240, 220, 30),
    "purple": (150, 40, 200),
    "white": (240, 240, 240),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
SIZES: dict[str, float] = {"small": 0.28, "large": 0.46}  # bounding-box side as a fraction of the canvas
POSITIONS: tuple[str, ...] = ("top left", "top", "top right", "left", "center", "right",
                              "bottom left", "bottom", "bottom right")  # row-major 3 x 3 cells
HOLDOUT_PAIRS: tuple[tuple[str, str], ...] = (
    ("red", "triangle"), ("green", "circle"), ("blue", "cross"), ("yellow", "square"))
CLASS_NAMES: tuple[str, ...] = tuple(f"{c} {s}" for c in COLORS for s in SHAPES)  # label = c * 4 + s
IMAGE_SIZES: tuple[int, ...] = (16, 32, 64)
SPLITS: dict[str, int] = {"train": 0, "holdout": 1}
BACKGROUNDS: tuple[str, ...] = ("black", "random_dark", "noise", "by_shape")
# background="by_shape": each shape's dark background colour (the spurious feature of the CLIP lesson).
BACKGROUND_BY_SHAPE: dict[str, tuple[int, int, int]] = {
    "circle": (0, 40, 60), "square": (60, 30, 0), "triangle": (45, 0, 60), "cross": (0, 55, 20)}
DARK_MAX = 64  # = 2^6; every background channel is below it; random_dark and noise are uniform in [0, 64)
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
PHRASES: dict[str, str] = {  # how a caption says where an object is
    "top left": "at the top left", "top": "at the top", "top right": "at the top right",
    "left": "on the left", "center": "in the center", "right": "on the right",
    "bottom left": "at the bottom left", "bottom": "at the bottom", "bottom right": "at the bottom right"}

_PALETTE = np.array(list(COLORS.values()), np.int64)  # (6, 3)
_PAIRS = {  # split -> allowed (colour_idx, shape_idx) pairs, in label order
    "train": [divmod(k, 4) for k in range(24) if (list(COLORS)[k // 4], SHAPES[k % 4]) not in HOLDOUT_PAIRS],
    "holdout": [(list(COLORS).index(c), SHAPES.index(s)) for c, s in HOLDOUT_PAIRS],
}
# Random columns of an example (see `_uniform`); attempt a at a two-object layout uses _LAYOUT + 8a ...
_PAIR, _PAIR2, _TEMPLATE, _RELATION, _BG, _BG_SHAPE, _LAYOUT = 0, 1, 2, 3, 4, 7, 9
_NOISE = 1 << 20  # first column of the per-pixel background noise
_TYPED = 1 << 19  # first column of `typed_prompts`: a scene's column roles, shifted, so prompts are independent


def box_width(size: str, image_size: int) -> int:
    """Bounding-box side in pixels: round(SIZES[size] * image_size)."""
    return round(SIZES[size] * image_size)


# --- randomness -------------------------------------------------------------------------------------

def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijective avalanche of uint64 (wraps mod 2^64)."""
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _bits(seed: int, split_id: int, index_N: np.ndarray, columns_k: np.ndarray) -> np.ndarray:
    """h(seed, split, index, column): uint64 (N, k), a pure function of its four arguments."""
    key = _mix(np.array([seed], np.uint64) ^ _mix(np.array([split_id], np.uint64)))  # (1,)
    key_N1 = _mix(key ^ np.asarray(index_N, np.uint64))[:, None]
    return _mix(key_N1 ^ _mix(np.asarray(columns_k, np.uint64))[None, :])


def _uniform(seed: int, split_id: int, index_N: np.ndarray, columns_k: np.ndarray) -> np.ndarray:
    """u(seed, split, index, column) in [0, 1): float64 (N, k), the top 53 bits of `_bits`."""
    return (_bits(seed, split_id, index_N, columns_k) >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


def _pick(u: np.ndarray, m: int | np.ndarray) -> np.ndarray:
    """floor(u * m): a uniform integer in [0, m)."""
    return np.minimum((u * m).astype(np.int64), np.asarray(m) - 1)


# --- geometry ---------------------------------------------------------------------------------------

def shape_mask(shape: str, i: np.ndarray, j: np.ndarray, h: Any, w: Any) -> np.ndarray:
    """Pixels (row offset i, column offset j) of `shape` drawn in an h x w box at offset (0, 0).

    Integer arithmetic throughout (see the module docstring); for h = w this is SHAPES.md's geometry.
    All arguments broadcast; the result is False outside the box.
    """
    i, j, h, w = (np.asarray(a, np.int64) for a in (i, j, h, w))
    inside = (i >= 0) & (i < h) & (j >= 0) & (j < w)
    if shape == "square":
        return inside
    if shape == "circle":  # ((2j+1-w)/w)^2 + ((2i+1-h)/h)^2 <= 1
        return inside & ((2 * j + 1 - w) ** 2 * h ** 2 + (2 * i + 1 - h) ** 2 * w ** 2 <= (w * h) ** 2)
    if shape == "triangle":  # |2j+1-w| / w <= (i+1) / h: half-width grows linearly to w/2 at the base
        return inside & (np.abs(2 * j + 1 - w) * h <= (i + 1) * w)
    if shape == "cross":  # arms of thickness t = max(1, w // 3), centred
        tw, th = np.maximum(1, w // 3), np.maximum(1, h // 3)
        column = (j >= (w - tw) // 2) & (j < (w - tw) // 2 + tw)
        row = (i >= (h - th) // 2) & (i < (h - th) // 2 + th)
        return inside & (column | row)
    raise ValueError(f"unknown shape {shape!r}; choose one of {SHAPES}")


@cache
def _corner_ranges(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Valid box corners x0 per (small / large, cell): lo, hi (inclusive) int (2, 3), such that
    0 <= x0 <= size - w (on the canvas) and c size / 3 <= x0 + w / 2 < (c + 1) size / 3 (centre in cell c)."""
    lo, hi = np.zeros((2, 3), np.int64), np.zeros((2, 3), np.int64)
    for k, name in enumerate(SIZES):
        w = box_width(name, size)
        x0 = np.arange(size - w + 1)
        cell = (2 * x0 + w) * 3 // (2 * size)  # floor(3 (x0 + w / 2) / size)
        lo[k] = [x0[cell == c].min() for c in range(3)]
        hi[k] = [x0[cell == c].max() for c in range(3)]
    return lo, hi


def _layout(u_N4: np.ndarray, size: int) -> dict[str, np.ndarray]:
    """One object's size (0 small, 1 large), box side w, cell and box corner (y0, x0), from 4 uniforms
    per example: int arrays (N,). Size, cell and the corner within the cell's range are uniform."""
    large, cell = _pick(u_N4[:, 0], 2), _pick(u_N4[:, 1], 9)
    lo, hi = _corner_ranges(size)
    row, col = np.divmod(cell, 3)
    y0 = lo[large, row] + _pick(u_N4[:, 2], hi[large, row] - lo[large, row] + 1)
    x0 = lo[large, col] + _pick(u_N4[:, 3], hi[large, col] - lo[large, col] + 1)
    w = np.array([box_width(name, size) for name in SIZES])[large]
    return {"large": large, "w": w, "cell": cell, "y0": y0, "x0": x0}


def _apart(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> np.ndarray:
    """True where two boxes are separated by at least one pixel along x or y: bool (N,)."""
    gap_x = np.maximum(a["x0"] - (b["x0"] + b["w"]), b["x0"] - (a["x0"] + a["w"]))
    gap_y = np.maximum(a["y0"] - (b["y0"] + b["w"]), b["y0"] - (a["y0"] + a["w"]))
    return (gap_x >= 1) | (gap_y >= 1)


def relation_holds(box_a: tuple, box_b: tuple, relation: str, tolerance: int = 0) -> bool:
    """Whether "a RELATION b" holds between boxes (top, left, height, width): a is left of b iff a's box
    ends at or before b's begins, left_a + width_a <= left_b + tolerance; right of, above, below alike.

    tolerance 0 is the rule captions choose their relation by, on the rendered boxes. The grader allows
    RELATION_TOLERANCE = 1: ragged or blurred edges of generated objects can grow a read box by a pixel,
    so boxes that overlap by one column (row) still count. Opposite relations exclude each other while
    width_a + width_b > 2 tolerance.
    """
    (top_a, left_a, h_a, w_a), (top_b, left_b, h_b, w_b) = box_a, box_b
    gap = {"left of": left_b - (left_a + w_a), "right of": left_a - (left_b + w_b),
           "above": top_b - (top_a + h_a), "below": top_a - (top_b + h_b)}
    if relation not in gap:
        raise ValueError(f"unknown relation {relation!r}; choose one of {RELATIONS}")
    return bool(gap[relation] >= -tolerance)


@cache
def _pixels(shape: str, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column offsets of the pixels of `shape` in a w x w box: int (P,), (P,)."""
    return np.nonzero(shape_mask(shape, *np.indices((w, w)), w, w))


def _paint(images_NSS3: np.ndarray, obj: dict[str, np.ndarray]) -> None:
    """Draw one object per image in place: per (shape, size) one scatter of its P template pixels."""
    size = images_NSS3.shape[1]
    for s, shape in enumerate(SHAPES):
        for k, name in enumerate(SIZES):
            idx_n = np.flatnonzero((obj["shape"] == s) & (obj["large"] == k))
            i_P, j_P = _pixels(shape, box_width(name, size))
            rows_nP, cols_nP = obj["y0"][idx_n, None] + i_P, obj["x0"][idx_n, None] + j_P
            images_NSS3[idx_n[:, None], rows_nP, cols_nP] = _PALETTE[obj["color"][idx_n]][:, None, :]


# --- scenes -----------------------------------------------------------------------------------------

def _check_draw(split, objects, n, seed, start) -> None:
    """The arguments that `generate` and `typed_prompts` share."""
    if split not in SPLITS:
        raise ValueError(f"unknown shapes split {split!r}; choose one of {tuple(SPLITS)}")
    if objects not in (1, 2):
        raise ValueError(f"objects must be 1 or 2, got {objects}")
    for name, value in (("n", n), ("seed", seed), ("start", start)):
        if not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")


def _check(size, split, objects, background, shape_background_p, n, seed, start) -> None:
    if size not in IMAGE_SIZES:
        raise ValueError(f"shapes renders sizes {IMAGE_SIZES}, got size={size}")
    _check_draw(split, objects, n, seed, start)
    if background not in BACKGROUNDS:
        raise ValueError(f"unknown background {background!r}; choose one of {BACKGROUNDS}")
    if not 0.0 <= shape_background_p <= 1.0:
        raise ValueError(f"shape_background_p must be a probability, got {shape_background_p}")


def _pairs(u_Nk: np.ndarray, split: str, objects: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per object slot, (colour_idx, shape_idx) int arrays (N,): uniform over the split's allowed pairs;
    a second object has another pair."""
    pairs = np.array(_PAIRS[split])  # (m, 2)
    first = _pick(u_Nk[:, _PAIR], len(pairs))
    chosen = [first, (first + 1 + _pick(u_Nk[:, _PAIR2], len(pairs) - 1)) % len(pairs)][:objects]
    return [(pairs[c, 0], pairs[c, 1]) for c in chosen]


def _objects(u_Nk: np.ndarray, seed: int, split: str, index_N: np.ndarray, size: int,
             objects: int) -> list[dict[str, np.ndarray]]:
    """Per object slot, int arrays (N,): colour, shape (`_pairs`) and the `_layout` fields.

    Two objects' layouts are drawn again (fresh columns per attempt) until the boxes are apart.
    """
    slots = [_layout(u_Nk[:, _LAYOUT + 4 * k:_LAYOUT + 4 * k + 4], size) for k in range(objects)]
    if objects == 2:
        attempt, todo = 1, np.flatnonzero(~_apart(*slots))
        while todo.size:  # each attempt succeeds with probability > 1/2
            redo = _uniform(seed, SPLITS[split], index_N[todo], _LAYOUT + 8 * attempt + np.arange(8))
            new = [_layout(redo[:, :4], size), _layout(redo[:, 4:], size)]
            for slot, fresh in zip(slots, new):
                for key in slot:
                    slot[key][todo] = fresh[key]
            attempt, todo = attempt + 1, todo[~_apart(*new)]
    for slot, (color, shape) in zip(slots, _pairs(u_Nk, split, objects)):
        slot["color"], slot["shape"] = color, shape
    return slots


def _backgrounds(u_Nk: np.ndarray, seed: int, split_id: int, index_N: np.ndarray, size: int,
                 background: str, shape_N: np.ndarray, shape_background_p: float) -> np.ndarray:
    """Canvas per image: uint8 (N, S, S, 3)."""
    n = len(index_N)
    if background == "black":
        return np.zeros((n, size, size, 3), np.uint8)
    if background == "noise":  # every pixel and channel uniform in [0, 64): a 6-bit field of h each
        bits_Np1 = _bits(seed, split_id, index_N, _NOISE + np.arange(size * size))[..., None]
        rgb_Np3 = (bits_Np1 >> np.array([0, 6, 12], np.uint64)) & np.uint64(DARK_MAX - 1)
        return rgb_Np3.astype(np.uint8).reshape(n, size, size, 3)
    if background == "random_dark":  # one flat colour, each channel uniform in [0, DARK_MAX)
        rgb_N3 = _pick(u_Nk[:, _BG:_BG + 3], DARK_MAX)
    else:  # by_shape: the shape's colour with probability p, otherwise one of the other three shapes'
        other = (shape_N + 1 + _pick(u_Nk[:, _BG_SHAPE], 3)) % 4
        keyed = np.where(u_Nk[:, _BG_SHAPE + 1] < shape_background_p, shape_N, other)
        rgb_N3 = np.array(list(BACKGROUND_BY_SHAPE.values()))[keyed]
    return np.broadcast_to(rgb_N3.astype(np.uint8)[:, None, None, :], (n, size, size, 3)).copy()


def _relation(u: float, boxes: list[tuple]) -> str:
    """The relation a two-object caption states: drawn by u among those that hold (`relation_holds`,
    tolerance 0) between the boxes (y0, x0, w)."""
    box_a, box_b = ((y0, x0, w, w) for y0, x0, w in boxes)
    true = [r for r in RELATIONS if relation_holds(box_a, box_b, r)]
    return true[int(u * len(true))]


def _caption(objs: list[dict[str, str]], sized: bool, where: bool, relation: str | None) -> str:
    """One caption: "a [size] colour shape [where]" (where: one-object scenes only), or for two objects
    "a [size] colour shape RELATION a [size] colour shape"; `sized`: name the size(s)."""
    names = [(f"{o['size']} " if sized else "") + f"{o['color']} {o['shape']}" for o in objs]
    if len(objs) == 2:
        return f"a {names[0]} {relation} a {names[1]}"
    return f"a {names[0]} {PHRASES[objs[0]['position']]}" if where else f"a {names[0]}"


def generate(n: int, size: int = 32, seed: int = 0, split: str = "train", objects: int = 1,
             background: str = "black", start: int = 0, shape_background_p: float = 1.0) -> dict[str, Any]:
    """Render examples start .. start + n - 1 of a split.

    Returns `images` uint8 (n, size, size, 3), `captions` (n str), `objects` (per image a list of
    dicts with `color`, `shape`, `size`, `position`); for one-object scenes `labels` int32 (n,)
    = colour_idx * 4 + shape_idx with `class_names` (CLASS_NAMES); for two-object scenes `relations`
    (n str, one of RELATIONS: the caption's "object 0 RELATION object 1", true of the rendered boxes).
    `split`: "train" (never a HOLDOUT_PAIRS pair) or "holdout" (only those pairs).
    `objects=2`: two objects whose boxes are at least one pixel apart; the caption relates them
    ("a red circle left of a blue square"); their (colour, shape) pairs differ.
    `background`: "black" (default), "random_dark" (a flat dark colour), "noise" (dark per-pixel noise)
    or "by_shape" (BACKGROUND_BY_SHAPE of the first object's shape with probability
    `shape_background_p`, otherwise one of the other three shapes' colours; p = 0.25 decorrelates).
    """
    _check(size, split, objects, background, shape_background_p, n, seed, start)
    index_N = np.arange(start, start + n, dtype=np.int64)
    u_Nk = _uniform(seed, SPLITS[split], index_N, np.arange(_LAYOUT + 8))
    slots = _objects(u_Nk, seed, split, index_N, size, objects)
    images = _backgrounds(u_Nk, seed, SPLITS[split], index_N, size, background, slots[0]["shape"],
                          shape_background_p)
    for slot in slots:
        _paint(images, slot)

    template = _pick(u_Nk[:, _TEMPLATE], 4)  # bit 0: name the size(s), bit 1: name where (one object)
    color_names, size_names = list(COLORS), list(SIZES)
    scenes = [[{"color": color_names[c], "shape": SHAPES[s], "size": size_names[z], "position": POSITIONS[p]}
               for c, s, z, p in zip(*(slot[k].tolist() for k in ("color", "shape", "large", "cell")))]
              for slot in slots]
    boxes = [list(zip(*(slot[k].tolist() for k in ("y0", "x0", "w")))) for slot in slots]
    objs = [list(scene) for scene in zip(*scenes)]
    relations = [_relation(u_Nk[k, _RELATION], [b[k] for b in boxes]) if objects == 2 else None for k in range(n)]
    captions = [_caption(objs[k], template[k] & 1, template[k] & 2, relations[k]) for k in range(n)]
    out = {"images": images, "captions": captions, "objects": objs}
    if objects == 1:
        out["labels"] = (slots[0]["color"] * 4 + slots[0]["shape"]).astype(np.int32)
        out["class_names"] = list(CLASS_NAMES)
    else:
        out["relations"] = relations
    return out


def typed_prompts(n: int, seed: int = 0, split: str = "train", objects: int = 1,
                  sizes: bool = True) -> dict[str, Any]:
    """Prompts as a person types them, for text-to-image evaluation: colour and shape always, never a
    position; with `sizes`, the size(s) in about half of them ("a red circle", "a large blue cross");
    two objects: "a red circle left of a blue square", the relation uniform over RELATIONS.

    Returns `captions` (n str), `objects` (per prompt a list of dicts with `color`, `shape` and, where
    the prompt names it, `size`) and, for objects=2, `relations` (n str: object 0 RELATION object 1).
    Pairs as in `generate`: train never a HOLDOUT_PAIRS pair, holdout only those, two objects' pairs differ.
    Prompt i is a pure function of (seed, split, i), drawn from columns of its own (_TYPED), so it is
    independent of `generate`'s example i.
    """
    _check_draw(split, objects, n, seed, 0)
    if not isinstance(sizes, bool):
        raise ValueError(f"sizes must be True or False, got {sizes!r}")
    u_Nk = _uniform(seed, SPLITS[split], np.arange(n), _TYPED + np.arange(_LAYOUT + 4 * objects))
    sized_N = sizes & (u_Nk[:, _TEMPLATE] < 0.5)  # bool (N,): name the size(s)
    large_Nk = _pick(u_Nk[:, _LAYOUT::4], 2)  # each object's size from its layout's first column, as in `_layout`
    pairs, color_names, size_names = _pairs(u_Nk, split, objects), list(COLORS), list(SIZES)
    objs = [[{"color": color_names[color[i]], "shape": SHAPES[shape[i]]}
             | ({"size": size_names[large_Nk[i, k]]} if sized_N[i] else {}) for k, (color, shape) in enumerate(pairs)]
            for i in range(n)]
    relations = [RELATIONS[r] for r in _pick(u_Nk[:, _RELATION], len(RELATIONS))]
    captions = [_caption(prompt, sized, False, relation) for prompt, sized, relation in zip(objs, sized_N, relations)]
    out = {"captions": captions, "objects": objs}
    if objects == 2:
        out["relations"] = relations
    return out


def examples(split: str = "train", n: int | None = None, image_size: int = 32, seed: int = 0,
             **options: Any) -> dict[str, Any]:
    """The source-module interface of `minimodal.data.load_examples`: `generate` with n = 20,000 by
    default. Options: objects, background, start, shape_background_p."""
    allowed = {"objects", "background", "start", "shape_background_p"}
    if set(options) - allowed:
        raise ValueError(f"unknown shapes option(s) {sorted(set(options) - allowed)}; "
                         f"shapes accepts {sorted(allowed)}")
    return generate(20_000 if n is None else n, size=image_size, seed=seed, split=split, **options)


# --- the grader -------------------------------------------------------------------------------------

CORE_DISTANCE = 90.0  # RGB distance from the background beyond which a pixel surely shows the object
MIN_BLOB = 0.25  # blobs smaller than this fraction of the largest one (two objects: the smaller one) are specks
MIN_IOU = 0.5  # a foreground that overlaps its best template less than this is unreadable
RELATION_TOLERANCE = 1  # px of box overlap that `scene_fidelity` still accepts (see relation_holds)


# Inner boxes tried inside the foreground's bounding box: each side moved in by 0 or 1 pixel, so a ragged
# rim one pixel wide does not distort the template; (0, 0, 0, 0) first, so exact matches win ties.
_INSETS = np.array([(dt, db, dl, dr)  # (16, 4): top, bottom, left, right
                    for dt in (0, 1) for db in (0, 1) for dl in (0, 1) for dr in (0, 1)])


@lru_cache(maxsize=4096)
def _templates(h: int, w: int) -> np.ndarray:
    """Every shape drawn in every inner box of an h x w box (see _INSETS): bool (16, 4, h, w)."""
    i, j = np.arange(h)[None, :, None], np.arange(w)[None, None, :]
    dt, db, dl, dr = (_INSETS[:, k, None, None] for k in range(4))  # (16, 1, 1) each: top, bottom, left, right
    return np.stack([shape_mask(s, i - dt, j - dl, h - dt - db, w - dl - dr) for s in SHAPES], axis=1)


_EIGHT_NEIGHBOURS = np.ones((3, 3), bool)


def _blob_labels(mask_SS: np.ndarray, rank: int = 1) -> np.ndarray:
    """The 8-connected blobs of `mask`, labelled 1, 2, ... int (S, S), with the specks (blobs smaller than
    MIN_BLOB x the rank-th largest blob) and the rest of the image labelled 0."""
    labels_SS, count = ndimage.label(mask_SS, structure=_EIGHT_NEIGHBOURS)
    area = np.bincount(labels_SS.ravel(), minlength=count + 1)
    area[0] = 0  # the background
    keep = area >= MIN_BLOB * np.sort(area)[::-1][min(rank, count + 1) - 1]  # rank-th largest, 0 if none
    keep[0] = False
    return np.where(keep[labels_SS], labels_SS, 0)


def _main_blobs(mask_SS: np.ndarray) -> np.ndarray:
    """`mask` without its 8-connected blobs smaller than MIN_BLOB x the largest one."""
    return _blob_labels(mask_SS) > 0


def _centred(image: np.ndarray, reader: str) -> tuple[np.ndarray, np.ndarray]:
    """x - bg float64 (S, S, 3) and bg (3,), the median colour of the image's outer ring of pixels."""
    image = np.asarray(image)
    square = image.ndim == 3 and image.shape[2] == 3 and 8 <= image.shape[0] == image.shape[1]
    if image.dtype != np.uint8 or not square:
        raise ValueError(f"{reader} expects one square uint8 image (S, S, 3) with S >= 8, got "
                         f"{image.dtype} {image.shape}; convert model outputs with "
                         "minimodal.data.denormalize_images")
    ring = np.concatenate([image[0], image[-1], image[1:-1, 0], image[1:-1, -1]])  # (4S - 4, 3)
    bg = np.median(ring, axis=0)  # (3,)
    return image - bg, bg


def _core(x_SS3: np.ndarray) -> np.ndarray:
    """Pixels that surely show an object: ||x - bg|| > CORE_DISTANCE, bool (S, S)."""
    return np.linalg.norm(x_SS3, axis=-1) > CORE_DISTANCE


def _read_object(x_SS3: np.ndarray, bg: np.ndarray, core_SS: np.ndarray,
                 region_SS: np.ndarray | bool = True) -> dict[str, Any] | None:
    """One object's colour, shape, position and box (top, left, height, width), from its core pixels.

    colour = the palette colour p whose blend line x = bg + alpha (p - bg) fits the core best
    (least squared distance, so blurred or dimmed pixels still vote for their colour);
    coverage alpha = (x - bg).(p - bg) / ||p - bg||^2; foreground = alpha > 1/2 inside `region`, without
    specks (blobs < MIN_BLOB of the largest); shape = the template T (`shape_mask` stretched to the
    foreground's bounding box, or to a box one pixel in on some sides) of least sum (T - clip(alpha))^2
    over the box (for a clean image: the exact match); box = T's box; position = the 3 x 3 cell of its centre;
    size = the SIZES name whose box width is nearer the box's longer side.
    None for too few core or foreground pixels (under a quarter of a small box) or a foreground that is
    no shape (IoU with the best template < MIN_IOU).
    """
    size = x_SS3.shape[0]
    min_pixels = max(4.0, 0.25 * (SIZES["small"] * size) ** 2)  # a quarter of a small box
    if core_SS.sum() < min_pixels:
        return None
    d_63 = _PALETTE - bg  # p - bg for each palette colour
    norm_6 = np.linalg.norm(d_63, axis=-1)
    x_M3 = x_SS3[core_SS]
    # ||x - bg||^2 - ((x - bg).u)^2, u = (p - bg) / ||p - bg||: squared distance from p's blend line
    line_6 = (x_M3 ** 2).sum() - ((x_M3 @ (d_63 / np.maximum(norm_6, 1.0)[:, None]).T) ** 2).sum(0)
    color = int(np.argmin(np.where(norm_6 > CORE_DISTANCE, line_6, np.inf)))  # p must stand out from bg
    alpha_SS = x_SS3 @ d_63[color] / (d_63[color] @ d_63[color])  # x = bg + alpha (p - bg)
    fg_SS = _main_blobs((alpha_SS > 0.5) & region_SS)
    if fg_SS.sum() < min_pixels:
        return None
    rows, cols = np.flatnonzero(fg_SS.any(1)), np.flatnonzero(fg_SS.any(0))
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    templates = _templates(bottom - top, right - left)  # (16, 4, h, w)
    alpha_hw = np.clip(alpha_SS[top:bottom, left:right], 0.0, 1.0)
    sq_err = ((templates - alpha_hw) ** 2).sum((2, 3))  # (16, 4): least squares alpha ~ template
    inset, shape = np.unravel_index(np.argmin(sq_err), sq_err.shape)
    best, crop = templates[inset, shape], fg_SS[top:bottom, left:right]
    if (best & crop).sum() / (best | crop).sum() < MIN_IOU:
        return None
    dt, db, dl, dr = _INSETS[inset]
    top, bottom, left, right = int(top + dt), int(bottom - db), int(left + dl), int(right - dr)  # T's box
    row = min(2, 3 * (top + bottom) // (2 * size))  # floor(3 * centre / size)
    col = min(2, 3 * (left + right) // (2 * size))
    side = max(bottom - top, right - left)
    nearest = min(SIZES, key=lambda name: abs(box_width(name, size) - side))
    return {"color": list(COLORS)[color], "shape": SHAPES[shape], "size": nearest,
            "position": POSITIONS[row * 3 + col], "box": (top, left, bottom - top, right - left)}


def read_attributes(image: np.ndarray) -> dict[str, str] | None:
    """The exact grader: colour, shape, size and position of a one-object scene, from uint8 pixels only.

    bg = median colour of the outer ring of pixels; core = pixels with ||x - bg|| > CORE_DISTANCE, without
    specks (blobs < MIN_BLOB of the largest); the object is read from the core by `_read_object`.
    None for an image without an object (too few core or foreground pixels) or whose foreground is
    no shape (IoU with the best template < MIN_IOU).
    """
    x_SS3, bg = _centred(image, "read_attributes")
    obj = _read_object(x_SS3, bg, _main_blobs(_core(x_SS3)))
    return None if obj is None else {key: obj[key] for key in ("color", "shape", "size", "position")}


def read_scene(image: np.ndarray) -> list[dict[str, Any]] | None:
    """The exact grader of a two-object scene: per object `color`, `shape`, `position` and `box`
    (top, left, height, width), ordered left to right (then top to bottom) by their boxes' corners.

    The core (as in `read_attributes`) splits into its 8-connected blobs; specks are blobs smaller than
    MIN_BLOB x the second largest, the smaller object (relative to the largest, as one-object scenes
    have it, a small cross at 16 px, 1/7 of a large square, would be a speck). Exactly two blobs must
    remain; each is read by `_read_object`, its foreground confined to the pixels nearer to its own core
    than to the other's, so the other object never joins it (rendered objects are >= 1 px apart).
    None unless exactly two blobs remain and both are readable objects.
    """
    x_SS3, bg = _centred(image, "read_scene")
    labels_SS = _blob_labels(_core(x_SS3), rank=2)
    ids = np.unique(labels_SS[labels_SS > 0])
    if len(ids) != 2:
        return None
    near_2SS = np.stack([ndimage.distance_transform_edt(labels_SS != k) for k in ids])  # distance to each core
    objs = [_read_object(x_SS3, bg, labels_SS == k, near_2SS[i] < near_2SS[1 - i]) for i, k in enumerate(ids)]
    if None in objs:
        return None
    return sorted(objs, key=lambda obj: (obj["box"][1], obj["box"][0]))
