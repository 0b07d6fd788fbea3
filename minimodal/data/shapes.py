"""`shapes`: the built-in procedural image–caption data set, exactly as ../shared/SHAPES.md specifies.

A scene is one (or two) flat-filled shapes on a `size` x `size` canvas (size in {16, 32, 64}):
    colour in COLORS (6), shape in SHAPES (4), size in SIZES (bounding box w = round(frac * size)),
    position in POSITIONS (the 3 x 3 cell that holds the bounding-box centre).
Geometry in integer pixel coordinates, with (i, j) the row / column offset inside a w x w box:
    circle    (2j + 1 - w)^2 + (2i + 1 - w)^2 <= w^2          (a disc of diameter w)
    square    every pixel of the box
    triangle  |2j + 1 - w| <= i + 1                          (apex at the top centre, base = height = w)
    cross     a centred column and row of thickness max(1, w // 3)
The same geometry, stretched to an h x w box, is the template set of the grader `read_attributes`.

Determinism: every random number of example `index` is u(seed, split, index, k) for a fixed column k
(a counter-based hash, `_uniform`), so example i is identical whatever `n` or `start` asks for it,
and a whole batch is drawn in a few vectorised numpy operations.

Tensor names: N examples, S canvas side, k random columns.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

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
DARK_MAX = 64  # every background channel is below this; random_dark and noise draw uniformly in [0, 64)
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


def _uniform(seed: int, split_id: int, index_N: np.ndarray, columns_k: np.ndarray) -> np.ndarray:
    """u(seed, split, index, column) in [0, 1): float64 (N, k), a pure function of its four arguments."""
    key = _mix(np.array([seed], np.uint64) ^ _mix(np.array([split_id], np.uint64)))  # (1,)
    key_N1 = _mix(key ^ np.asarray(index_N, np.uint64))[:, None]
    bits_Nk = _mix(key_N1 ^ _mix(np.asarray(columns_k, np.uint64))[None, :])
    return (bits_Nk >> np.uint64(11)).astype(np.float64) * 2.0 ** -53  # top 53 bits -> [0, 1)


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


@lru_cache(maxsize=None)
def _offsets(size: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Valid box corners per cell: lo[c], hi[c] (inclusive) with 0 <= x0 <= size - w and
    c * size / 3 <= x0 + w / 2 < (c + 1) * size / 3 (the box centre lies in cell c)."""
    x0 = np.arange(size - w + 1)
    cell = np.floor((2 * x0 + w) * 3 / (2 * size)).astype(int)  # floor(3 (x0 + w/2) / size)
    lo = np.array([x0[cell == c].min() for c in range(3)])
    hi = np.array([x0[cell == c].max() for c in range(3)])
    return lo, hi


def _layout(u_Nk: np.ndarray, image_size: int) -> dict[str, np.ndarray]:
    """One object's size, cell and box corner from 4 uniforms per example: int arrays (N,)."""
    large = _pick(u_Nk[:, 0], 2)
    w = np.where(large == 1, box_width("large", image_size), box_width("small", image_size))
    cell = _pick(u_Nk[:, 1], 9)
    row, col = np.divmod(cell, 3)
    corners = []
    for rc, u in ((row, u_Nk[:, 2]), (col, u_Nk[:, 3])):
        lo = np.empty_like(rc)
        hi = np.empty_like(rc)
        for width in np.unique(w):
            lo_c, hi_c = _offsets(image_size, int(width))
            lo[w == width], hi[w == width] = lo_c[rc[w == width]], hi_c[rc[w == width]]
        corners.append(lo + _pick(u, hi - lo + 1))
    return {"size": large, "w": w, "cell": cell, "y0": corners[0], "x0": corners[1]}


def _apart(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> np.ndarray:
    """True where two boxes are separated by at least one pixel along x or y: bool (N,)."""
    gap_x = np.maximum(a["x0"] - (b["x0"] + b["w"]), b["x0"] - (a["x0"] + a["w"]))
    gap_y = np.maximum(a["y0"] - (b["y0"] + b["w"]), b["y0"] - (a["y0"] + a["w"]))
    return (gap_x >= 1) | (gap_y >= 1)


def _paint(images_NSS3: np.ndarray, shape_N: np.ndarray, color_N3: np.ndarray, y0_N: np.ndarray,
           x0_N: np.ndarray, w_N: np.ndarray) -> None:
    """Draw one object per image in place, shape by shape (vectorised over the images)."""
    grid = np.arange(images_NSS3.shape[1])
    for s, name in enumerate(SHAPES):
        idx = np.flatnonzero(shape_N == s)
        if idx.size:
            y0, x0, w = (a[idx, None, None] for a in (y0_N, x0_N, w_N))
            mask_nSS = shape_mask(name, grid[None, :, None] - y0, grid[None, None, :] - x0, w, w)
            sub = images_NSS3[idx]
            sub[mask_nSS] = np.repeat(color_N3[idx], mask_nSS.sum((1, 2)), axis=0)
            images_NSS3[idx] = sub


# --- scenes -----------------------------------------------------------------------------------------

def _check(size: int, split: str, objects: int, background: str, n: int, seed: int, start: int) -> None:
    if size not in IMAGE_SIZES:
        raise ValueError(f"shapes renders sizes {IMAGE_SIZES}, got size={size}")
    if split not in SPLITS:
        raise ValueError(f"unknown shapes split {split!r}; choose one of {tuple(SPLITS)}")
    if objects not in (1, 2):
        raise ValueError(f"objects must be 1 or 2, got {objects}")
    if background not in BACKGROUNDS:
        raise ValueError(f"unknown background {background!r}; choose one of {BACKGROUNDS}")
    for name, value in (("n", n), ("seed", seed), ("start", start)):
        if not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")


def _backgrounds(u, seed, split_id, index_N, size, background, shape_N, shape_background_p):
    """Canvas per image: uint8 (N, S, S, 3)."""
    n = len(index_N)
    if background == "black":
        return np.zeros((n, size, size, 3), np.uint8)
    if background == "noise":  # every pixel and channel uniform in [0, DARK_MAX)
        cols = _NOISE + np.arange(size * size * 3)
        return _pick(_uniform(seed, split_id, index_N, cols), DARK_MAX).astype(np.uint8).reshape(
            n, size, size, 3)
    if background == "random_dark":  # one flat colour, each channel uniform in [0, DARK_MAX)
        rgb_N3 = _pick(u[:, _BG:_BG + 3], DARK_MAX)
    else:  # by_shape: the shape's colour with probability p, otherwise another shape's
        other = (shape_N + 1 + _pick(u[:, _BG_SHAPE], 3)) % 4
        keyed = np.where(u[:, _BG_SHAPE + 1] < shape_background_p, shape_N, other)
        rgb_N3 = np.array(list(BACKGROUND_BY_SHAPE.values()), np.int64)[keyed]
    return np.broadcast_to(rgb_N3.astype(np.uint8)[:, None, None, :], (n, size, size, 3)).copy()


def _describe(color: int, shape: int, large: int, with_size: bool) -> str:
    size = ("large " if large else "small ") if with_size else ""
    return f"{size}{list(COLORS)[color]} {SHAPES[shape]}"


def generate(n: int, size: int = 32, seed: int = 0, split: str = "train", objects: int = 1,
             background: str = "black", start: int = 0, shape_background_p: float = 1.0) -> dict[str, Any]:
    """Render examples start .. start + n - 1 of a split.

    Returns `images` uint8 (n, size, size, 3), `captions` (n str), `objects` (per image a list of
    dicts with `color`, `shape`, `size`, `position`) and, for one-object scenes, `labels` int32 (n,)
    = colour_idx * 4 + shape_idx with `class_names` (CLASS_NAMES).
    `split`: "train" (never a HOLDOUT_PAIRS pair) or "holdout" (only those pairs).
    `objects=2`: two objects whose boxes are at least one pixel apart; the caption relates them
    ("a red circle left of a blue square"); their (colour, shape) pairs differ.
    `background`: "black" (default), "random_dark" (a flat dark colour), "noise" (dark per-pixel noise)
    or "by_shape" (BACKGROUND_BY_SHAPE of the first object's shape with probability
    `shape_background_p`, otherwise one of the other three shapes' colours; p = 0.25 decorrelates).
    """
    _check(size, split, objects, background, n, seed, start)
    if not 0.0 <= shape_background_p <= 1.0:
        raise ValueError(f"shape_background_p must be a probability, got {shape_background_p}")
    split_id, pairs = SPLITS[split], np.array(_PAIRS[split])  # pairs (m, 2)
    index_N = np.arange(start, start + n, dtype=np.int64)
    u = _uniform(seed, split_id, index_N, np.arange(_LAYOUT + 8))  # (N, 17)

    first = _pick(u[:, _PAIR], len(pairs))
    chosen = [first]
    layouts = [_layout(u[:, _LAYOUT:_LAYOUT + 4], size)]
    if objects == 2:  # a different pair, and a layout drawn again until the boxes are apart
        chosen.append((first + 1 + _pick(u[:, _PAIR2], len(pairs) - 1)) % len(pairs))
        second = _layout(u[:, _LAYOUT + 4:_LAYOUT + 8], size)
        attempt, todo = 1, np.flatnonzero(~_apart(layouts[0], second))
        while todo.size:
            cols = _LAYOUT + 8 * attempt + np.arange(8)
            redo = _uniform(seed, split_id, index_N[todo], cols)
            a, b = _layout(redo[:, :4], size), _layout(redo[:, 4:], size)
            for layout, new in ((layouts[0], a), (second, b)):
                for key in layout:
                    layout[key][todo] = new[key]
            attempt, todo = attempt + 1, todo[~_apart(a, b)]
        layouts.append(second)
    color_N = [pairs[c, 0] for c in chosen]
    shape_N = [pairs[c, 1] for c in chosen]

    images = _backgrounds(u, seed, split_id, index_N, size, background, shape_N[0], shape_background_p)
    for c, s, lay in zip(color_N, shape_N, layouts):
        _paint(images, s, _PALETTE[c], lay["y0"], lay["x0"], lay["w"])

    template = _pick(u[:, _TEMPLATE], 4)  # bit 0: name the size, bit 1: name where
    captions, objs = [], []
    for k in range(n):
        obj = [{"color": list(COLORS)[c[k]], "shape": SHAPES[s[k]], "size": ("small", "large")[lay["size"][k]],
                "position": POSITIONS[lay["cell"][k]]} for c, s, lay in zip(color_N, shape_N, layouts)]
        objs.append(obj)
        with_size, with_where = template[k] & 1, template[k] & 2
        a = _describe(color_N[0][k], shape_N[0][k], layouts[0]["size"][k], with_size)
        if objects == 1:
            captions.append(f"a {a} {PHRASES[obj[0]['position']]}" if with_where else f"a {a}")
        else:
            b = _describe(color_N[1][k], shape_N[1][k], layouts[1]["size"][k], with_size)
            captions.append(f"a {a} {_relation(layouts, k, u[k, _RELATION])} a {b}")
    out = {"images": images, "captions": captions, "objects": objs}
    if objects == 1:
        out["labels"] = (color_N[0] * 4 + shape_N[0]).astype(np.int32)
        out["class_names"] = list(CLASS_NAMES)
    return out


def _relation(layouts: list[dict[str, np.ndarray]], k: int, u: float) -> str:
    """A relation that holds between the boxes of objects 0 and 1 of example k, picked with u."""
    a, b = ({key: int(v[k]) for key, v in lay.items()} for lay in layouts)
    true = [r for r, holds in zip(RELATIONS, (
        a["x0"] + a["w"] <= b["x0"], b["x0"] + b["w"] <= a["x0"],
        a["y0"] + a["w"] <= b["y0"], b["y0"] + b["w"] <= a["y0"])) if holds]
    return true[int(u * len(true))]


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

FOREGROUND_DISTANCE = 90.0  # RGB distance from the background beyond which a pixel is foreground
MIN_IOU = 0.5  # a blob that matches no shape template this well is unreadable


@lru_cache(maxsize=4096)
def _templates(h: int, w: int) -> np.ndarray:
    """Every shape drawn in an h x w box: bool (4, h, w)."""
    i, j = np.arange(h)[:, None], np.arange(w)[None, :]
    return np.stack([shape_mask(s, i, j, h, w) for s in SHAPES])


def read_attributes(image: np.ndarray) -> dict[str, str] | None:
    """The exact grader: colour, shape and position of a one-object scene, from uint8 pixels only.

    background = median colour of the outer ring of pixels; foreground = pixels farther than
    FOREGROUND_DISTANCE from it, minus isolated specks; colour = the palette colour nearest the median
    foreground colour; shape = the template (`shape_mask` stretched to the foreground's bounding box)
    with the highest IoU; position = the 3 x 3 cell of the bounding-box centre.
    Returns None for an image with (almost) no foreground or a blob that is no shape (IoU < MIN_IOU).
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3 or image.shape[0] != image.shape[1]:
        raise ValueError(f"read_attributes expects one square uint8 image (S, S, 3), got {image.dtype} "
                         f"{image.shape}; convert model outputs with minimodal.data.denormalize_images")
    size = image.shape[0]
    pixels = image.astype(np.float32)
    ring = np.concatenate([pixels[0], pixels[-1], pixels[1:-1, 0], pixels[1:-1, -1]])  # (4S - 4, 3)
    fg_SS = np.linalg.norm(pixels - np.median(ring, axis=0), axis=-1) > FOREGROUND_DISTANCE
    padded = np.pad(fg_SS, 1)
    neighbours = sum(padded[1 + di:size + 1 + di, 1 + dj:size + 1 + dj]
                     for di in (-1, 0, 1) for dj in (-1, 0, 1)) - fg_SS
    fg_SS &= neighbours > 0  # drop isolated specks
    if fg_SS.sum() < max(4.0, 0.25 * (SIZES["small"] * size) ** 2):  # a quarter of a small box
        return None
    rows, cols = np.flatnonzero(fg_SS.any(1)), np.flatnonzero(fg_SS.any(0))
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    crop = fg_SS[top:bottom, left:right]
    templates = _templates(bottom - top, right - left)
    iou_4 = (templates & crop).sum((1, 2)) / (templates | crop).sum((1, 2))
    if iou_4.max() < MIN_IOU:
        return None
    rgb = np.median(pixels[fg_SS], axis=0)
    color = int(np.argmin(((_PALETTE - rgb) ** 2).sum(-1)))
    row = min(2, int(3 * (top + bottom) / (2 * size)))  # floor(3 * centre / size)
    col = min(2, int(3 * (left + right) / (2 * size)))
    return {"color": list(COLORS)[color], "shape": SHAPES[int(np.argmax(iou_4))], "position": POSITIONS[row * 3 + col]}
