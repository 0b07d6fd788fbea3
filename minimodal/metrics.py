"""Metrics shared by the models and lessons.

Caption fidelity: does a generated one-object `shapes` image show what its prompt asked for?
The exact grader `minimodal.data.shapes.read_attributes` reads colour, shape and position back from
the pixels; an unreadable image (None) counts as wrong on every attribute.
Speech to text: word and character error rates (edit distance over words / characters, summed over a corpus).
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


def edit_distance(reference: Sequence[Any], hypothesis: Sequence[Any]) -> int:
    """Levenshtein distance: the fewest substitutions, deletions and insertions turning hypothesis into
    reference, by the row-by-row dynamic programme d[i][j] = min(d[i-1][j] + 1, d[i][j-1] + 1,
    d[i-1][j-1] + [ref_i != hyp_j])."""
    row = list(range(len(hypothesis) + 1))
    for i, r in enumerate(reference, 1):
        previous, row[0] = row[0], i
        for j, h in enumerate(hypothesis, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (r != h))
    return row[-1]


def _normalise(text: str) -> str:
    return " ".join(text.lower().split())


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus WER = Σ edit_distance(words) / Σ reference words (lower-cased, whitespace-split)."""
    if len(references) != len(hypotheses) or not references:
        raise ValueError(f"need as many hypotheses as references (>= 1); got {len(hypotheses)} and {len(references)}")
    errors = sum(edit_distance(_normalise(r).split(), _normalise(h).split()) for r, h in zip(references, hypotheses))
    return errors / max(sum(len(_normalise(r).split()) for r in references), 1)


def char_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus CER = Σ edit_distance(characters) / Σ reference characters (after the same normalisation)."""
    if len(references) != len(hypotheses) or not references:
        raise ValueError(f"need as many hypotheses as references (>= 1); got {len(hypotheses)} and {len(references)}")
    errors = sum(edit_distance(_normalise(r), _normalise(h)) for r, h in zip(references, hypotheses))
    return errors / max(sum(len(_normalise(r)) for r in references), 1)
