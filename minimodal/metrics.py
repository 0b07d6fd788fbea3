"""Metrics shared by the models and lessons.

Caption fidelity (first): does a generated one-object `shapes` image show what its prompt asked for?
The exact grader `minimodal.data.shapes.read_attributes` reads colour, shape and position back from
the pixels; an unreadable image (None) counts as wrong on every attribute.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from minimodal.data.shapes import read_attributes


def _prompt_objects(objects: Sequence[Any], n: int) -> list[dict[str, str]]:
    """One object dict per image; accepts `generate`'s per-image lists (of length 1) or bare dicts."""
    if len(objects) != n:
        raise ValueError(f"got {n} images but {len(objects)} prompt objects")
    out = []
    for k, obj in enumerate(objects):
        if not isinstance(obj, dict):
            if len(obj) != 1:
                raise ValueError(f"caption fidelity grades one-object scenes; image {k} asks for "
                                 f"{len(obj)} objects")
            obj = obj[0]
        out.append(obj)
    return out


def attribute_accuracy(images_uint8: Any, objects: Sequence[Any]) -> dict[str, float]:
    """Fractions of images whose attributes, read back by the grader, match the prompt's object.

    Returns {"color", "shape", "position", "both" (colour and shape), "unreadable" (grader said None)};
    "position" is over the prompts that name one (NaN when none does).
    `images_uint8`: uint8 (N, S, S, 3); `objects`: per image the prompt's object (as in `generate`).
    """
    images = np.asarray(images_uint8)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"expected uint8 images (N, S, S, 3), got {images.dtype} {images.shape}; "
                         "convert model outputs with minimodal.data.denormalize_images")
    if len(images) == 0:
        raise ValueError("no images to grade")
    wanted = _prompt_objects(objects, len(images))
    hits = {"color": 0, "shape": 0, "position": 0, "both": 0, "unreadable": 0}
    with_position = sum("position" in want for want in wanted)  # prompts may leave the position open
    for image, want in zip(images, wanted):
        got = read_attributes(image)
        if got is None:
            hits["unreadable"] += 1
            continue
        match = {key: got[key] == want[key] for key in ("color", "shape", "position") if key in want}
        for key, ok in match.items():
            hits[key] += ok
        hits["both"] += match["color"] and match["shape"]
    out = {key: count / len(images) for key, count in hits.items()}
    out["position"] = hits["position"] / with_position if with_position else float("nan")
    return out


def caption_fidelity(images_uint8: Any, objects: Sequence[Any]) -> float:
    """Fraction of one-object images whose colour AND shape, read back by the grader, match the prompt."""
    return attribute_accuracy(images_uint8, objects)["both"]
