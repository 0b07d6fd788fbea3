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
    assert acc == {"color": 1.0, "shape": 1.0, "position": 1.0, "both": 1.0, "unreadable": 0.0}


def test_each_attribute_is_counted_on_its_own(scenes):
    images, objects = scenes["images"], [o for (o,) in scenes["objects"]]  # bare dicts are accepted too
    colors = list(shapes.COLORS)
    wrong_colour = [dict(o, color=colors[(colors.index(o["color"]) + 1) % 6]) for o in objects]
    wrong_position = [dict(o, position=shapes.POSITIONS[(shapes.POSITIONS.index(o["position"]) + 1) % 9])
                      for o in objects]
    prompts = wrong_colour[:15] + wrong_position[15:30] + objects[30:]  # 1/4 wrong colour, 1/4 wrong place
    acc = metrics.attribute_accuracy(images, prompts)
    assert acc == {"color": 0.75, "shape": 1.0, "position": 0.75, "both": 0.75, "unreadable": 0.0}
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
