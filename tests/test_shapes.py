"""The shapes data set against its contract (../shared/SHAPES.md) and the exact grader."""

from __future__ import annotations

import re

import numpy as np
import pytest

from minimodal.data import load_examples, shapes

SIZES = (16, 32, 64)
BOX = {16: (4, 7), 32: (9, 15), 64: (18, 29)}  # round(0.28 S), round(0.46 S)


def foreground(image: np.ndarray) -> np.ndarray:
    """Non-black pixels of a black-background scene: bool (S, S)."""
    return image.any(-1)


def bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right), bottom / right exclusive."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return rows[0], rows[-1] + 1, cols[0], cols[-1] + 1


def cell(lo: int, hi: int, size: int) -> int:
    return int(np.floor((lo + hi) / 2 * 3 / size))


# --- constants ----------------------------------------------------------------------------------------

def test_constants_are_the_contract():
    assert shapes.COLORS == {"red": (230, 25, 25), "green": (25, 190, 25), "blue": (30, 60, 230),
                             "yellow": (240, 220, 30), "purple": (150, 40, 200), "white": (240, 240, 240)}
    assert shapes.SHAPES == ("circle", "square", "triangle", "cross")
    assert shapes.SIZES == {"small": 0.28, "large": 0.46}
    assert shapes.POSITIONS == ("top left", "top", "top right", "left", "center", "right",
                                "bottom left", "bottom", "bottom right")
    assert set(shapes.HOLDOUT_PAIRS) == {("red", "triangle"), ("green", "circle"), ("blue", "cross"),
                                         ("yellow", "square")}
    assert len(shapes.CLASS_NAMES) == 24
    assert shapes.CLASS_NAMES[2 * 4 + 3] == "blue cross" and shapes.CLASS_NAMES[0] == "red circle"
    assert {s: (shapes.box_width("small", s), shapes.box_width("large", s)) for s in SIZES} == BOX


# --- rendering ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", SIZES)
def test_pixels_are_palette_colours_on_black(size):
    data = shapes.generate(200, size, seed=1)
    rgb_N113 = np.array([shapes.COLORS[o["color"]] for (o,) in data["objects"]])[:, None, None, :]
    black, painted = (data["images"] == 0).all(-1), (data["images"] == rgb_N113).all(-1)
    assert np.all(black | painted) and black.any((1, 2)).all() and painted.any((1, 2)).all()


@pytest.mark.parametrize("size", SIZES)
def test_box_width_cell_and_geometry(size):
    data = shapes.generate(300, size, seed=2)
    seen = set()
    for image, (obj,) in zip(data["images"], data["objects"]):
        mask = foreground(image)
        top, bottom, left, right = bbox(mask)
        w = BOX[size][obj["size"] == "large"]
        assert bottom - top == right - left == w, obj
        assert shapes.POSITIONS[3 * cell(top, bottom, size) + cell(left, right, size)] == obj["position"]
        i, j = np.arange(size)[:, None] - top, np.arange(size)[None, :] - left
        np.testing.assert_array_equal(mask, shapes.shape_mask(obj["shape"], i, j, w, w))
        seen.add((obj["size"], obj["position"], obj["shape"]))
    assert len(seen) > 60  # sizes, all 9 cells and the 4 shapes all occur


@pytest.mark.parametrize("w", [4, 7, 9, 15, 18, 29])
def test_shape_geometry_closed_forms(w):
    i, j = np.arange(w)[:, None], np.arange(w)[None, :]
    circle, square, triangle, cross = (shapes.shape_mask(s, i, j, w, w) for s in shapes.SHAPES)
    assert square.all()
    # circle: a disc of diameter w touching all four sides, area ~ pi w^2 / 4, symmetric
    assert circle[0].any() and circle[-1].any() and circle[:, 0].any() and circle[:, -1].any()
    assert abs(circle.sum() - np.pi * w ** 2 / 4) <= 1.2 * w  # error ~ perimeter / 4
    np.testing.assert_array_equal(circle, circle.T)
    np.testing.assert_array_equal(circle, circle[::-1])
    # triangle: apex at the top centre (1 or 2 px), base = the whole bottom row, widths grow, area ~ w^2 / 2
    widths = triangle.sum(1)
    assert widths[0] == 2 - w % 2 and widths[-1] == w and np.all(np.diff(widths) >= 0)
    np.testing.assert_array_equal(triangle, triangle[:, ::-1])
    assert abs(triangle.sum() - w * w / 2) <= w
    # cross: arms of thickness max(1, w // 3), centred (margins differ by at most a pixel)
    t = max(1, w // 3)
    np.testing.assert_array_equal(cross.sum(1)[[0, -1]], [t, t])
    np.testing.assert_array_equal(cross.sum(0)[[0, -1]], [t, t])
    assert cross.sum() == 2 * w * t - t * t
    arm = np.flatnonzero(cross[0])
    assert abs(arm[0] - (w - 1 - arm[-1])) <= 1 and np.all(np.diff(arm) == 1)
    np.testing.assert_array_equal(cross, cross.T)


def test_shape_mask_is_empty_outside_its_box_and_rejects_unknown_shapes():
    i, j = np.arange(-3, 12)[:, None], np.arange(-3, 12)[None, :]
    for s in shapes.SHAPES:
        mask = shapes.shape_mask(s, i, j, 9, 9)
        assert not mask[:3].any() and not mask[:, :3].any() and not mask[12:].any() and not mask[:, 12:].any()
    with pytest.raises(ValueError, match="unknown shape"):
        shapes.shape_mask("star", i, j, 9, 9)


# --- splits, determinism, captions --------------------------------------------------------------------

def pairs_of(data):
    return {(o["color"], o["shape"]) for objs in data["objects"] for o in objs}


@pytest.mark.parametrize("objects", [1, 2])
def test_holdout_pairs_never_in_train_and_are_all_of_holdout(objects):
    train = pairs_of(shapes.generate(2000, 16, split="train", objects=objects))
    holdout = pairs_of(shapes.generate(400, 16, split="holdout", objects=objects))
    held = set(shapes.HOLDOUT_PAIRS)
    assert not train & held
    assert len(train) == 20  # every other pair occurs
    assert holdout == held


def test_labels_match_objects():
    data = shapes.generate(300, 16, seed=3)
    names = [f"{o['color']} {o['shape']}" for (o,) in data["objects"]]
    assert data["labels"].dtype == np.int32
    assert [data["class_names"][k] for k in data["labels"]] == names
    colors = list(shapes.COLORS)
    want = [colors.index(o["color"]) * 4 + shapes.SHAPES.index(o["shape"]) for (o,) in data["objects"]]
    np.testing.assert_array_equal(data["labels"], want)


@pytest.mark.parametrize("options", [{}, {"objects": 2}, {"background": "noise"},
                                     {"background": "random_dark"},
                                     {"background": "by_shape", "shape_background_p": 0.7}])
def test_deterministic_in_seed_split_index(options):
    whole = shapes.generate(30, 16, seed=5, **options)
    part = shapes.generate(10, 16, seed=5, start=12, **options)
    np.testing.assert_array_equal(part["images"], whole["images"][12:22])
    assert part["captions"] == whole["captions"][12:22] and part["objects"] == whole["objects"][12:22]
    other_seed = shapes.generate(30, 16, seed=6, **options)
    other_split = shapes.generate(30, 16, seed=5, split="holdout", **options)
    assert other_seed["captions"] != whole["captions"] and other_split["captions"] != whole["captions"]


WHERE = "|".join(shapes.PHRASES.values())
ONE = re.compile(rf"a (?:(small|large) )?(\w+) (\w+)(?: ({WHERE}))?")
TWO = re.compile(r"a (?:(small|large) )?(\w+) (\w+) (left of|right of|above|below) "
                 r"a (?:(small|large) )?(\w+) (\w+)")


def test_one_object_captions_name_colour_and_shape():
    data = shapes.generate(400, 16, seed=4)
    forms = set()
    for caption, (obj,) in zip(data["captions"], data["objects"]):
        m = ONE.fullmatch(caption)
        assert m, caption
        size, color, shape, where = m.groups()
        assert (color, shape) == (obj["color"], obj["shape"])
        assert size in (None, obj["size"])
        assert where in (None, shapes.PHRASES[obj["position"]])
        forms.add((size is None, where is None))
    assert len(forms) == 4  # every template occurs


@pytest.mark.parametrize("size", SIZES)
def test_two_objects_never_overlap_and_relations_hold(size):
    data = shapes.generate(300, size, seed=7, objects=2)
    checked = 0
    for image, caption, objs, relation in zip(data["images"], data["captions"], data["objects"], data["relations"]):
        a, b = objs
        assert (a["color"], a["shape"]) != (b["color"], b["shape"]) and a["position"] != b["position"]
        m = TWO.fullmatch(caption)
        assert m, caption
        size_a, color_a, shape_a, stated, size_b, color_b, shape_b = m.groups()
        assert stated == relation  # the structured relation is the caption's
        assert (color_a, shape_a, color_b, shape_b) == (a["color"], a["shape"], b["color"], b["shape"])
        assert size_a in (None, a["size"]) and size_b in (None, b["size"])
        # no overlap: the painted pixels are the two shapes' full areas
        areas = [shapes.shape_mask(o["shape"], *np.indices((64, 64)), w, w).sum()
                 for o in objs for w in [BOX[size][o["size"] == "large"]]]
        assert foreground(image).sum() == sum(areas)
        if a["color"] != b["color"]:  # then each object's box can be read off its colour
            ta, ba, la, ra = bbox((image == shapes.COLORS[a["color"]]).all(-1))
            tb, bb, lb, rb = bbox((image == shapes.COLORS[b["color"]]).all(-1))
            assert lb - ra >= 1 or la - rb >= 1 or tb - ba >= 1 or ta - bb >= 1  # a pixel apart
            assert {"left of": ra <= lb, "right of": rb <= la, "above": ba <= tb, "below": bb <= ta}[relation]
            assert shapes.relation_holds((ta, la, ba - ta, ra - la), (tb, lb, bb - tb, rb - lb), relation)
            checked += 1
    assert checked > 200 and set(data["relations"]) == set(shapes.RELATIONS)
    assert "relations" not in shapes.generate(4, size)


def test_typed_prompts_name_colour_shape_and_sometimes_size():
    data = shapes.typed_prompts(400, seed=3)
    assert set(data) == {"captions", "objects"}
    named = []
    for caption, (obj,) in zip(data["captions"], data["objects"]):
        m = ONE.fullmatch(caption)
        assert m and m.group(4) is None, caption  # never a position
        size, color, shape, _ = m.groups()
        assert obj == {"color": color, "shape": shape} | ({"size": size} if size else {})
        named.append(size is not None)
    assert 0.4 < np.mean(named) < 0.6
    bare = shapes.typed_prompts(100, seed=3, sizes=False)
    assert all(ONE.fullmatch(c).group(1) is None for c in bare["captions"])
    assert all(set(o) == {"color", "shape"} for (o,) in bare["objects"])


def test_typed_prompts_relate_two_objects():
    data = shapes.typed_prompts(400, seed=4, objects=2)
    for caption, objs, relation in zip(data["captions"], data["objects"], data["relations"]):
        m = TWO.fullmatch(caption)
        assert m, caption
        size_a, color_a, shape_a, stated, size_b, color_b, shape_b = m.groups()
        assert stated == relation
        assert objs == [{"color": color_a, "shape": shape_a} | ({"size": size_a} if size_a else {}),
                        {"color": color_b, "shape": shape_b} | ({"size": size_b} if size_b else {})]
        assert (color_a, shape_a) != (color_b, shape_b) and (size_a is None) == (size_b is None)
    assert set(data["relations"]) == set(shapes.RELATIONS)


@pytest.mark.parametrize("objects", [1, 2])
def test_typed_prompts_are_deterministic_and_keep_the_split(objects):
    whole = shapes.typed_prompts(300, seed=5, objects=objects)
    assert shapes.typed_prompts(300, seed=5, objects=objects) == whole
    assert shapes.typed_prompts(40, seed=5, objects=objects)["captions"] == whole["captions"][:40]
    assert shapes.typed_prompts(300, seed=6, objects=objects)["captions"] != whole["captions"]
    holdout = shapes.typed_prompts(300, seed=5, split="holdout", objects=objects)
    assert holdout["captions"] != whole["captions"]
    held = set(shapes.HOLDOUT_PAIRS)
    assert not pairs_of(whole) & held and len(pairs_of(whole)) == 20
    assert pairs_of(holdout) == held
    with pytest.raises(ValueError, match="split"):
        shapes.typed_prompts(4, split="test")
    with pytest.raises(ValueError, match="sizes"):
        shapes.typed_prompts(4, sizes="yes")


# --- backgrounds --------------------------------------------------------------------------------------

def background_colours(images: np.ndarray, black: np.ndarray) -> np.ndarray:
    """The colour of each image's first background pixel (found from the same scenes on black): (N, 3)."""
    first = (~foreground(black)).reshape(len(black), -1).argmax(1)
    return images.reshape(len(images), -1, 3)[np.arange(len(images)), first]


def test_backgrounds_change_only_the_background():
    black = shapes.generate(50, 16)["images"]
    bg = ~foreground(black)
    for name in ("random_dark", "noise", "by_shape"):
        images = shapes.generate(50, 16, background=name)["images"]
        np.testing.assert_array_equal(images[~bg], black[~bg])
        assert images[bg].max() < shapes.DARK_MAX
    dark = shapes.generate(50, 16, background="random_dark")["images"]
    flat = background_colours(dark, black)[:, None, None, :]
    assert np.all((dark == flat).all(-1) | ~bg) and len({tuple(c) for c in flat[:, 0, 0]}) > 40
    noise = shapes.generate(50, 16, background="noise")["images"][bg]
    assert noise.max() < shapes.DARK_MAX and noise.std() > 10


def test_background_by_shape_correlation():
    shape_of = {rgb: s for s, rgb in shapes.BACKGROUND_BY_SHAPE.items()}
    black = shapes.generate(2000, 16)["images"]
    for p, lo, hi in [(1.0, 1.0, 1.0), (0.8, 0.77, 0.83), (0.25, 0.22, 0.28)]:
        data = shapes.generate(2000, 16, background="by_shape", shape_background_p=p)
        keyed = [shape_of[tuple(int(v) for v in c)] for c in background_colours(data["images"], black)]
        agree = np.mean([k == o["shape"] for k, (o,) in zip(keyed, data["objects"])])
        assert lo <= agree <= hi, (p, agree)


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="sizes"):
        shapes.generate(4, 48)
    with pytest.raises(ValueError, match="split"):
        shapes.generate(4, split="test")
    with pytest.raises(ValueError, match="background"):
        shapes.generate(4, background="white")
    with pytest.raises(ValueError, match="objects"):
        shapes.generate(4, objects=3)
    with pytest.raises(ValueError, match="non-negative"):
        shapes.generate(-1)
    with pytest.raises(ValueError, match="probability"):
        shapes.generate(4, shape_background_p=1.5)
    with pytest.raises(ValueError, match="unknown shapes option"):
        shapes.examples("train", 4, 32, 0, colour="red")


def test_examples_is_the_source_interface():
    data = load_examples("shapes", "holdout", n=6, image_size=16, seed=2, objects=1)
    ref = shapes.generate(6, 16, seed=2, split="holdout")
    np.testing.assert_array_equal(data["images"], ref["images"])
    assert data["captions"] == ref["captions"] and data["images"].shape == (6, 16, 16, 3)


# --- the grader ---------------------------------------------------------------------------------------

def read_rate(images, objects):
    got = [shapes.read_attributes(im) for im in images]
    want = [{k: o[k] for k in ("color", "shape", "size", "position")} for (o,) in objects]
    return np.mean([g == w for g, w in zip(got, want)])


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("background", ["black", "random_dark", "noise", "by_shape"])
def test_grader_reads_rendered_scenes(size, background):
    data = shapes.generate(300, size, seed=11, background=background)
    large = np.array([o["size"] == "large" for (o,) in data["objects"]])
    assert read_rate(data["images"][large], np.array(data["objects"], object)[large]) >= 0.99
    assert read_rate(data["images"][~large], np.array(data["objects"], object)[~large]) >= 0.99


@pytest.mark.parametrize("size", SIZES)
def test_grader_survives_mild_gaussian_noise(size):
    data = shapes.generate(300, size, seed=12)
    noise = np.random.default_rng(0).normal(0, 12, data["images"].shape)
    noisy = np.clip(data["images"] + noise, 0, 255).astype(np.uint8)
    assert read_rate(noisy, data["objects"]) >= 0.99


def test_grader_says_none_without_an_object():
    assert shapes.read_attributes(np.zeros((32, 32, 3), np.uint8)) is None
    assert shapes.read_attributes(np.full((16, 16, 3), 50, np.uint8)) is None
    speck = np.zeros((32, 32, 3), np.uint8)
    speck[5, 5] = speck[20, 9] = (230, 25, 25)  # isolated pixels are noise, not an object
    assert shapes.read_attributes(speck) is None
    with pytest.raises(ValueError, match="uint8"):
        shapes.read_attributes(np.zeros((32, 32, 3), np.float32))


def rim_errors(images: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    """Ragged edges: each pixel on either side of an object's outline flips with probability p."""
    fg = foreground(images)
    padded = np.pad(fg, ((0, 0), (1, 1), (1, 1)))
    size = images.shape[1]
    neighbours = sum(padded[:, 1 + a:size + 1 + a, 1 + b:size + 1 + b]
                     for a, b in ((0, 1), (1, 0), (0, -1), (-1, 0)))
    flip = ((fg & (neighbours < 4)) | (~fg & (neighbours > 0))) & (rng.random(fg.shape) < p)
    colour = images.reshape(len(images), -1, 3).max(1)[:, None, None, :]  # each image's object colour
    flipped = np.where((flip & fg)[..., None], 0, np.where((flip & ~fg)[..., None], colour, images))
    return flipped.astype(np.uint8)


@pytest.mark.parametrize("size", [32, 64])
def test_grader_tolerates_generated_image_defects(size):
    n = 200
    data = shapes.generate(n, size, seed=13)
    images, rng = data["images"].astype(np.float64), np.random.default_rng(1)
    fg = foreground(data["images"])[..., None]
    # dimmed and tinted: x = 0.7 c + jitter on the object
    tinted = np.where(fg, 0.7 * images + rng.uniform(-25, 25, (n, 1, 1, 3)), images)
    assert read_rate(np.clip(tinted, 0, 255).astype(np.uint8), data["objects"]) >= 0.99
    specks = data["images"].copy()  # three stray bright pixels
    for _ in range(3):
        where = np.arange(n), rng.integers(0, size, n), rng.integers(0, size, n)
        specks[where] = rng.integers(100, 256, (n, 3))
    assert read_rate(specks, data["objects"]) >= 0.99
    assert read_rate(rim_errors(data["images"], 0.25, rng), data["objects"]) >= {32: 0.93, 64: 0.98}[size]
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)))  # soft edges: a 3 x 3 box blur
    blurred = sum(padded[:, 1 + a:size + 1 + a, 1 + b:size + 1 + b]
                  for a in (-1, 0, 1) for b in (-1, 0, 1)) / 9
    assert read_rate(np.rint(blurred).astype(np.uint8), data["objects"]) >= {32: 0.94, 64: 0.98}[size]


# --- two-object scenes: read_scene and relation_holds -------------------------------------------------

def attrs(obj: dict) -> tuple[str, str, str]:
    return obj["color"], obj["shape"], obj["position"]


def repaint(objs: list[dict], size: int) -> np.ndarray:
    """A black canvas with each read object drawn in its colour, shape and box: uint8 (S, S, 3)."""
    canvas = np.zeros((size, size, 3), np.uint8)
    for o in objs:
        top, left, h, w = o["box"]
        canvas[shapes.shape_mask(o["shape"], *np.indices((size, size)) - np.array([top, left])[:, None, None],
                                 h, w)] = shapes.COLORS[o["color"]]
    return canvas


@pytest.mark.parametrize("size", [16, 32])
@pytest.mark.parametrize("split", ["train", "holdout"])
def test_read_scene_is_exact_on_rendered_two_object_scenes(size, split):
    data = shapes.generate(300, size, seed=17, split=split, objects=2)
    for image, objs, relation in zip(data["images"], data["objects"], data["relations"]):
        got = shapes.read_scene(image)
        assert got is not None
        assert sorted(map(attrs, got)) == sorted(map(attrs, objs))  # every colour, shape and position
        np.testing.assert_array_equal(repaint(got, size), image)  # and every box, to the pixel
        assert (got[0]["box"][1], got[0]["box"][0]) <= (got[1]["box"][1], got[1]["box"][0])  # left to right
        a, b = got if attrs(got[0]) == attrs(objs[0]) else got[::-1]
        assert shapes.relation_holds(a["box"], b["box"], relation)


def test_read_scene_reads_dark_backgrounds_and_drops_specks():
    data = shapes.generate(100, 32, seed=18, objects=2, background="noise")
    assert all(sorted(map(attrs, shapes.read_scene(im))) == sorted(map(attrs, objs))
               for im, objs in zip(data["images"], data["objects"]))
    clean = shapes.generate(100, 32, seed=19, objects=2)
    specks, rng = clean["images"].copy(), np.random.default_rng(3)
    where = np.arange(100), rng.integers(0, 32, 100), rng.integers(0, 32, 100)
    specks[where] = np.where(specks[where].any(-1, keepdims=True), specks[where], 255)  # a stray white pixel
    assert [shapes.read_scene(im) for im in specks] == [shapes.read_scene(im) for im in clean["images"]]


def test_read_scene_says_none_unless_two_objects():
    for size in (16, 32):
        assert all(shapes.read_scene(im) is None for im in shapes.generate(100, size, seed=20)["images"])
        assert shapes.read_scene(np.zeros((size, size, 3), np.uint8)) is None
    three = np.zeros((32, 32, 3), np.uint8)
    three[2:11, 2:11] = three[2:11, 20:29] = three[20:29, 10:19] = shapes.COLORS["red"]
    assert shapes.read_scene(three) is None
    with pytest.raises(ValueError, match="read_scene expects one square uint8 image"):
        shapes.read_scene(np.zeros((32, 32, 3), np.float32))


def test_relation_holds_on_boxes():
    a = (0, 0, 4, 4)  # (top, left, height, width)
    touching, overlap1, overlap2 = (10, 4, 4, 4), (10, 3, 4, 4), (10, 2, 4, 4)
    assert shapes.relation_holds(a, touching, "left of") and shapes.relation_holds(touching, a, "right of")
    assert shapes.relation_holds(a, touching, "above") and shapes.relation_holds(touching, a, "below")
    assert not shapes.relation_holds(a, touching, "right of") and not shapes.relation_holds(a, touching, "below")
    # the grader's tolerance: boxes that overlap by one pixel still count, by two they do not
    assert not shapes.relation_holds(a, overlap1, "left of")
    assert shapes.relation_holds(a, overlap1, "left of", tolerance=shapes.RELATION_TOLERANCE)
    assert not shapes.relation_holds(a, overlap2, "left of", tolerance=shapes.RELATION_TOLERANCE)
    assert not shapes.relation_holds(a, overlap1, "right of", tolerance=shapes.RELATION_TOLERANCE)
    with pytest.raises(ValueError, match="unknown relation"):
        shapes.relation_holds(a, touching, "near")
