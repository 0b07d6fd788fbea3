"""How unCLIP is measured on `shapes` (`minimodal eval unclip`), every figure by the exact grader.

One-object data:
  fidelity_typed[_holdout]      caption fidelity on prompts as people type them ("a red circle", "a large blue
                                cross"; `shapes.typed_prompts`), prior -> decoder; per shape; `_textemb`: the
                                baseline that hands the decoder the CLIP text embedding y instead of a prior draw
  prior_cosine / text_cosine    mean cos(ẑ, z) and cos(y, z) against the CLIP embedding z of a fresh image with
                                that caption (ẑ: the prior's draw for the caption)
  zero_shot_prior / _text / _image   does the nearest of the 24 class prompts ("a red circle") name the image's
                                colour and shape, for ẑ, for y, and for z itself (CLIP's own zero-shot)
  variations_keep / _moved      decode(z) of fresh renders, 2 draws each: colour and shape kept; of all draws,
                                the share whose position or size differs from the source
  reconstruction_exact          the share of those draws that bring back colour, shape, size and position
Two-object data (`--data shapes:objects=2`): binding_<outcome>[_holdout] = `metrics.scene_fidelity` on typed
two-object prompts ("a red circle left of a blue square"): correct, attribute_swap, wrong_relation, other.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from minimodal.data import source_options
from minimodal.data import shapes
from minimodal.metrics import typed_prompt_report


def generation(pipe: Any, n: int, seed: int, objects: int) -> dict[str, float]:
    """Typed-prompt fidelity (one object) or binding outcomes (two), train and held-out pairs, per prior."""
    out = {}
    for prior in (["diffusion", "text"] if pipe.prior is not None else ["text"]):
        suffix = "_textemb" if prior == "text" and pipe.prior is not None else ""
        out.update(typed_prompt_report(lambda p: pipe.generate(p, seed=seed, prior=prior), n, seed, objects, suffix))
    return out


def prior_embeddings(pipe: Any, n: int, seed: int) -> dict[str, float]:
    """Cosines to the true image embedding, and zero-shot accuracy, of ẑ (prior), y (text) and z (image)."""
    clip = pipe.clip
    data = shapes.generate(n, clip.config.image_size, seed=seed, split="train")
    z_NE = clip.embed_images(data["images"])
    y_NE = clip.embed_texts(data["captions"])
    class_CE = clip.embed_texts([f"a {name}" for name in shapes.CLASS_NAMES])
    out = {"text_cosine": float(np.mean(np.sum(y_NE * z_NE, axis=1))),
           "zero_shot_text": float(np.mean(np.argmax(y_NE @ class_CE.T, 1) == data["labels"])),
           "zero_shot_image": float(np.mean(np.argmax(z_NE @ class_CE.T, 1) == data["labels"]))}
    if pipe.prior is not None:
        zhat_NE = pipe.embed_prompts(data["captions"], seed=seed)
        out["prior_cosine"] = float(np.mean(np.sum(zhat_NE * z_NE, axis=1)))
        out["zero_shot_prior"] = float(np.mean(np.argmax(zhat_NE @ class_CE.T, 1) == data["labels"]))
    return out


def variations(pipe: Any, n: int, seed: int, draws: int = 2) -> dict[str, float]:
    """Decode fresh renders' embeddings `draws` times each and compare what the grader reads with the source."""
    data = shapes.generate(n, pipe.clip.config.image_size, seed=seed, split="train")
    images = pipe.vary(data["images"], n=draws, seed=seed)  # (n, draws, H, W, 3)
    keep = moved = exact = 0
    for (source,), row in zip(data["objects"], images):
        for image in row:
            got = shapes.read_attributes(image)
            if got is None:
                continue
            same = got["color"] == source["color"] and got["shape"] == source["shape"]
            kept_place = got["position"] == source["position"] and got["size"] == source["size"]
            keep += same
            moved += not kept_place
            exact += same and kept_place
    total = n * draws
    return {"variations_keep": keep / total, "variations_moved": moved / total, "reconstruction_exact": exact / total}


def evaluate(pipe: Any) -> dict[str, float]:
    """Every unCLIP figure for a run on shapes (see the module docstring); {} for other data."""
    config = pipe.config
    name, _, options = config.data.partition(":")
    if name != "shapes":
        return {}
    objects = int(source_options(options).get("objects", 1))
    n, seed = config.eval_prompts, config.seed + 10_000
    out = generation(pipe, n, seed, objects)
    if objects == 1:
        out.update(prior_embeddings(pipe, n, seed + 1))
        out.update(variations(pipe, max(1, n // 2), seed + 2))
    return out
