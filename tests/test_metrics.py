"""Caption fidelity and attribute accuracy, on scenes whose true attributes are known."""

from __future__ import annotations

import numpy as np
import pytest

from minimodal import metrics
from minimodal.data import shapes


@pytest.fixture(scope="module")
def scenes():
    return shapes.generate(60, 32, seed=21)


def test_rendered_scenes_are_fully_faithful(scenes):
    assert metrics.caption_fidelity(scenes["images"], scenes["objects"]) == 1.0
    acc = metrics.attribute_accuracy(scenes["images"], scenes["objects"])
    assert acc == {"color": 1.0, "shape": 1.0, "size": 1.0, "position": 1.0, "both": 1.0, "unreadable": 0.0}


def test_each_attribute_is_counted_on_its_own(scenes):
    images, objects = scenes["images"], [o for (o,) in scenes["objects"]]  # bare dicts are accepted too
    colors = list(shapes.COLORS)
    wrong_colour = [dict(o, color=colors[(colors.index(o["color"]) + 1) % 6]) for o in objects]
    wrong_position = [dict(o, position=shapes.POSITIONS[(shapes.POSITIONS.index(o["position"]) + 1) % 9])
                      for o in objects]
    prompts = wrong_colour[:15] + wrong_position[15:30] + objects[30:]  # 1/4 wrong colour, 1/4 wrong place
    acc = metrics.attribute_accuracy(images, prompts)
    assert acc == {"color": 0.75, "shape": 1.0, "size": 1.0, "position": 0.75, "both": 0.75, "unreadable": 0.0}
    assert metrics.caption_fidelity(images, prompts) == 0.75


def test_unreadable_images_count_as_wrong(scenes):
    images = scenes["images"][:20].copy()
    images[:5] = 0  # blank: the grader reads nothing
    acc = metrics.attribute_accuracy(images, scenes["objects"][:20])
    assert acc["unreadable"] == 0.25 and acc["both"] == acc["color"] == acc["position"] == 0.75


def test_fidelity_is_near_chance_for_unrelated_prompts():
    data = shapes.generate(600, 16, seed=22)
    shuffled = [data["objects"][k] for k in np.random.default_rng(0).permutation(600)]
    # 20 equally likely train pairs; a random prompt matches its image's pair with probability ~1/20
    assert metrics.caption_fidelity(data["images"], shuffled) < 0.1


def test_typed_prompts_are_graded_on_colour_and_shape():
    pool = shapes.generate(200, 32, seed=23)
    prompts = shapes.typed_prompts(40, seed=1)
    pair = [(o["color"], o["shape"]) for (o,) in pool["objects"]]
    # per prompt a rendered scene of its colour and shape (any size, any place)
    images = pool["images"][[pair.index((o["color"], o["shape"])) for (o,) in prompts["objects"]]]
    assert metrics.caption_fidelity(images, prompts["objects"]) == 1.0
    assert np.isnan(metrics.attribute_accuracy(images, prompts["objects"])["position"])


def test_per_shape_fidelity_splits_the_prompts_by_the_shape_they_ask_for():
    data = shapes.generate(200, 16, seed=24)
    assert metrics.per_shape_fidelity(data["images"], data["objects"]) == {
        f"fidelity_{shape}": 1.0 for shape in shapes.SHAPES}
    # ask for a cross wherever a circle was drawn: crosses' fidelity drops, the other shapes' stay, circles vanish
    asked = [{**o, "shape": "cross"} if o["shape"] == "circle" else o for (o,) in data["objects"]]
    crosses_drawn = sum(o["shape"] == "cross" for (o,) in data["objects"])
    circles_drawn = sum(o["shape"] == "circle" for (o,) in data["objects"])
    graded = metrics.per_shape_fidelity(data["images"], asked)
    assert "fidelity_circle" not in graded and graded["fidelity_square"] == graded["fidelity_triangle"] == 1.0
    assert graded["fidelity_cross"] == pytest.approx(crosses_drawn / (crosses_drawn + circles_drawn))


def test_bad_input_is_a_clear_error(scenes):
    with pytest.raises(ValueError, match="uint8"):
        metrics.caption_fidelity(scenes["images"].astype(np.float32), scenes["objects"])
    with pytest.raises(ValueError, match="prompt objects"):
        metrics.caption_fidelity(scenes["images"], scenes["objects"][:3])
    two = shapes.generate(2, 32, objects=2)
    with pytest.raises(ValueError, match="one-object"):
        metrics.caption_fidelity(two["images"], two["objects"])
    with pytest.raises(ValueError, match="no images"):
        metrics.caption_fidelity(np.zeros((0, 32, 32, 3), np.uint8), [])


def test_prompts_without_a_position_are_graded_on_colour_and_shape():
    from minimodal.data import shapes
    from minimodal.metrics import attribute_accuracy

    data = shapes.generate(8, seed=3)
    wanted = [{"color": o[0]["color"], "shape": o[0]["shape"]} for o in data["objects"]]
    acc = attribute_accuracy(data["images"], wanted)
    assert acc["both"] == 1.0 and np.isnan(acc["position"])


# --- scene fidelity: two objects and their relation ----------------------------------------------------

FLIP = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


@pytest.fixture(scope="module")
def two():
    return shapes.generate(60, 32, seed=24, objects=2)


def all_in(fid: dict[str, float], name: str) -> bool:
    """Whether every image has outcome `name`: that fraction 1, the other outcomes 0."""
    return {k: fid[k] for k in metrics.OUTCOMES} == {k: float(k == name) for k in metrics.OUTCOMES}


def test_rendered_two_object_scenes_are_correct(two):
    fid = metrics.scene_fidelity(two["images"], two["objects"], two["relations"])
    assert all_in(fid, "correct") and fid["unreadable"] == 0.0
    typed = [[{k: o[k] for k in ("color", "shape")} for o in objs] for objs in two["objects"]]  # as typed
    assert metrics.scene_fidelity(two["images"], typed, two["relations"])["correct"] == 1.0


def test_flipped_relations_are_wrong_relations(two):
    fid = metrics.scene_fidelity(two["images"], two["objects"], [FLIP[r] for r in two["relations"]])
    assert all_in(fid, "wrong_relation")


def test_swapped_colours_are_attribute_swaps(two):
    # where both colours and both shapes differ, exchanging the colours is no other assignment's match
    keep = [k for k, (a, b) in enumerate(two["objects"]) if a["color"] != b["color"] and a["shape"] != b["shape"]]
    swapped = [[dict(a, color=b["color"]), dict(b, color=a["color"])] for a, b in (two["objects"][k] for k in keep)]
    relations = [two["relations"][k] for k in keep]
    assert len(keep) > 30
    fid = metrics.scene_fidelity(two["images"][keep], swapped, relations)
    assert all_in(fid, "attribute_swap")
    flipped = metrics.scene_fidelity(two["images"][keep], swapped, [FLIP[r] for r in relations])
    assert all_in(flipped, "attribute_swap")  # a swap whatever the relation


def test_wrong_shapes_and_unreadable_images_are_other(two):
    turn = {s: shapes.SHAPES[(k + 1) % 4] for k, s in enumerate(shapes.SHAPES)}
    wrong = [[dict(o, shape=turn[o["shape"]]) for o in objs] for objs in two["objects"]]
    fid = metrics.scene_fidelity(two["images"], wrong, two["relations"])
    assert all_in(fid, "other") and fid["unreadable"] == 0.0
    images = two["images"][:20].copy()
    images[:5] = 0  # blank
    images[5:10] = shapes.generate(5, 32, seed=25)["images"]  # one object
    fid = metrics.scene_fidelity(images, two["objects"][:20], two["relations"][:20])
    assert fid["unreadable"] == fid["other"] == 0.5 and fid["correct"] == 0.5


def test_scene_fidelity_bad_input_is_a_clear_error(two):
    images, objects, relations = two["images"][:4], two["objects"][:4], two["relations"][:4]
    with pytest.raises(ValueError, match="uint8"):
        metrics.scene_fidelity(images.astype(np.float32), objects, relations)
    with pytest.raises(ValueError, match="uint8"):
        metrics.scene_fidelity(images[0], objects, relations)
    with pytest.raises(ValueError, match="4 images but 3 prompt objects and 4 relations"):
        metrics.scene_fidelity(images, objects[:3], relations)
    with pytest.raises(ValueError, match="4 images but 4 prompt objects and 2 relations"):
        metrics.scene_fidelity(images, objects, relations[:2])
    with pytest.raises(ValueError, match="two-object prompts"):
        metrics.scene_fidelity(images, [objs[:1] for objs in objects], relations)
    with pytest.raises(ValueError, match="'color' and 'shape'"):
        metrics.scene_fidelity(images, [["red circle", "blue square"]] * 4, relations)
    with pytest.raises(ValueError, match="relation 'next to'"):
        metrics.scene_fidelity(images, objects, ["next to"] * 4)
    with pytest.raises(ValueError, match="no images"):
        metrics.scene_fidelity(np.zeros((0, 32, 32, 3), np.uint8), [], [])
