"""Metrics shared by the models and lessons.

Caption fidelity: does a generated one-object `shapes` image show what its prompt asked for?
The exact grader `minimodal.data.shapes.read_attributes` reads colour, shape and position back from
the pixels; an unreadable image (None) counts as wrong on every attribute.
Scene fidelity: does a two-object image show both asked objects in the asked relation? `read_scene` reads
the two objects and their boxes; `relation_holds` decides the relation; each image gets one outcome.
Speech to text: word and character error rates (edit distance over words / characters, summed over a corpus).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from minimodal.data.shapes import (RELATION_TOLERANCE, RELATIONS, SHAPES, read_attributes, read_scene, relation_holds,
                                   typed_prompts)

OUTCOMES = ("correct", "attribute_swap", "wrong_relation", "other")  # scene_fidelity's, one per image


def _checked_images(images_uint8: Any) -> np.ndarray:
    """uint8 (N, S, S, 3) with N >= 1, or a ValueError that names the fix."""
    images = np.asarray(images_uint8)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"expected uint8 images (N, S, S, 3), got {images.dtype} {images.shape}; "
                         "convert model outputs with minimodal.data.denormalize_images")
    if len(images) == 0:
        raise ValueError("no images to grade")
    return images


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

    Returns {"color", "shape", "size", "position", "both" (colour and shape), "unreadable" (grader said
    None)}; "size" and "position" are over the prompts that name one (NaN when none does).
    `images_uint8`: uint8 (N, S, S, 3); `objects`: per image the prompt's object (as in `generate`).
    """
    images = _checked_images(images_uint8)
    wanted = _prompt_objects(objects, len(images))
    hits = {"color": 0, "shape": 0, "size": 0, "position": 0, "both": 0, "unreadable": 0}
    named = {key: sum(key in want for want in wanted) for key in ("size", "position")}  # prompts may omit them
    for image, want in zip(images, wanted):
        got = read_attributes(image)
        if got is None:
            hits["unreadable"] += 1
            continue
        match = {key: got[key] == want[key] for key in ("color", "shape", "size", "position") if key in want}
        for key, ok in match.items():
            hits[key] += ok
        hits["both"] += match["color"] and match["shape"]
    out = {key: count / len(images) for key, count in hits.items()}
    for key, count in named.items():
        out[key] = hits[key] / count if count else float("nan")
    return out


def caption_fidelity(images_uint8: Any, objects: Sequence[Any]) -> float:
    """Fraction of one-object images whose colour AND shape, read back by the grader, match the prompt."""
    return attribute_accuracy(images_uint8, objects)["both"]


def _prompt_scenes(objects: Sequence[Any], relations: Sequence[str], n: int) -> None:
    """Checks that every image has a prompt of two objects (dicts naming colour and shape) and a relation."""
    if len(objects) != n or len(relations) != n:
        raise ValueError(f"got {n} images but {len(objects)} prompt objects and {len(relations)} relations")
    for k, (objs, relation) in enumerate(zip(objects, relations)):
        if isinstance(objs, dict) or len(objs) != 2:
            raise ValueError(f"scene fidelity grades two-object prompts; image {k} asks for {objs!r}")
        if not all(isinstance(o, dict) and {"color", "shape"} <= set(o) for o in objs):
            raise ValueError(f"prompt {k}'s objects must be dicts with 'color' and 'shape', got {objs!r}")
        if relation not in RELATIONS:
            raise ValueError(f"prompt {k}'s relation {relation!r} is not one of {RELATIONS}")


def _pair(obj: dict) -> tuple[str, str]:
    return obj["color"], obj["shape"]


def _assignments(got: list[dict], want: Sequence[dict]) -> list[tuple[dict, dict]]:
    """The pairs (a, b) of read objects, a for prompt object 0 and b for 1, whose colours and shapes match."""
    return [(a, b) for a, b in (got, got[::-1]) if (_pair(a), _pair(b)) == (_pair(want[0]), _pair(want[1]))]


def _scene_outcome(got: list[dict] | None, want: Sequence[dict], relation: str, tolerance: int) -> str:
    """One of OUTCOMES for a read scene (None: unreadable, so "other") against its prompt."""
    if got is None:
        return "other"
    matched = _assignments(got, want)
    if matched:
        holds = any(relation_holds(a["box"], b["box"], relation, tolerance) for a, b in matched)
        return "correct" if holds else "wrong_relation"
    swapped = [dict(want[0], color=want[1]["color"]), dict(want[1], color=want[0]["color"])]
    return "attribute_swap" if _assignments(got, swapped) else "other"


def scene_fidelity(images_uint8: Any, objects: Sequence[Any], relations: Sequence[str],
                   tolerance: int = RELATION_TOLERANCE) -> dict[str, float]:
    """Fractions of two-object images by outcome, as the grader `read_scene` reads them.

    "correct": both objects' colour and shape match the prompt's (in some assignment of read objects to
    prompt objects) and the prompt's relation holds between the objects matched to prompt objects 0 and 1
    (`relation_holds` with `tolerance` px of overlap, RELATION_TOLERANCE by default);
    "wrong_relation": both objects right, the relation not; "attribute_swap": the shapes right but the
    two colours exchanged ("a blue circle and a red square" for "a red circle ... a blue square");
    "other": anything else, unreadable included. These four sum to 1; "unreadable" (read_scene said
    None) is the part of "other" without two readable objects. Sizes and positions are not graded.
    `images_uint8`: uint8 (N, S, S, 3); `objects`: per image the prompt's two object dicts (as in
    `generate(objects=2)` or `typed_prompts(objects=2)`); `relations`: per image one of RELATIONS.
    """
    images = _checked_images(images_uint8)
    _prompt_scenes(objects, relations, len(images))
    read = [read_scene(image) for image in images]
    outcomes = [_scene_outcome(got, want, relation, tolerance) for got, want, relation in zip(read, objects, relations)]
    out = {name: outcomes.count(name) / len(images) for name in OUTCOMES}
    out["unreadable"] = read.count(None) / len(images)
    return out


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


def typed_prompt_fidelity(generate: Callable[[list[str]], np.ndarray], n: int, seed: int = 0,
                          split: str = "train", objects: int = 1) -> dict[str, float]:
    """A text-to-image model graded on prompts as people type them (`shapes.typed_prompts`).

    `generate(prompts) -> uint8 (N, S, S, 3)`. One object: {"fidelity" (colour and shape), "size" (over the
    prompts that name one), "fidelity_<shape>" per shape}; two objects: `scene_fidelity`'s outcomes.
    """
    prompts = typed_prompts(n, seed=seed, split=split, objects=objects)
    images = generate(prompts["captions"])
    if objects == 2:
        return scene_fidelity(images, prompts["objects"], prompts["relations"])
    acc = attribute_accuracy(images, prompts["objects"])
    return {"fidelity": acc["both"], "size": acc["size"], **per_shape_fidelity(images, prompts["objects"])}


def per_shape_fidelity(images_uint8: Any, objects: Sequence[Any]) -> dict[str, float]:
    """{"fidelity_<shape>": caption fidelity over the one-object prompts asking for that shape}, for each shape
    asked for (`objects` as in `caption_fidelity`)."""
    images = _checked_images(images_uint8)
    wanted = _prompt_objects(objects, len(images))
    out = {}
    for shape in SHAPES:
        rows = [k for k, obj in enumerate(wanted) if obj["shape"] == shape]
        if rows:
            out[f"fidelity_{shape}"] = caption_fidelity(images[rows], [wanted[k] for k in rows])
    return out


def typed_prompt_report(generate: Callable[[list[str]], np.ndarray], n: int, seed: int = 0, objects: int = 1,
                        suffix: str = "") -> dict[str, float]:
    """`typed_prompt_fidelity` on the train pairs and the held-out pairs, named for `minimodal eval`:
    one object: fidelity_typed, size_typed, fidelity_typed_<shape>, fidelity_typed_holdout;
    two objects: binding_<outcome> and binding_<outcome>_holdout; each name + `suffix`."""
    out = {}
    for split, tail in (("train", ""), ("holdout", "_holdout")):
        results = typed_prompt_fidelity(generate, n, seed, split, objects)
        if objects == 2:
            out.update({f"binding_{key}{tail}{suffix}": value for key, value in results.items()})
        elif split == "train":
            out.update({(key.replace("fidelity", "fidelity_typed", 1) if key.startswith("fidelity")
                         else f"{key}_typed") + suffix: value for key, value in results.items()})
        else:
            out[f"fidelity_typed_holdout{suffix}"] = results["fidelity"]
    return out
