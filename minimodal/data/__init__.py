"""Data sources -> one example format -> one batch pipeline.

`load_examples(source, split, n, image_size, seed)` returns a dict:
    images uint8 (n, S, S, 3) and/or waveforms int16 (n, L) (16 kHz speech), captions list[str] (n), and per
    source: labels int32 (n,) with `class_names`, or `objects` (shapes' structured attributes).
"""

from __future__ import annotations

import importlib
from typing import Any

from minimodal.data.pipeline import Batches, denormalize_images, normalize_audio, normalize_images

# source name -> module that defines `examples(split, n, image_size, seed, **options) -> dict`
SOURCES = {
    "shapes": "minimodal.data.shapes",
    "digits": "minimodal.data.digits",
    "cifar10": "minimodal.data.tfds_sources",
    "cifar100": "minimodal.data.tfds_sources",
    "coco_captions": "minimodal.data.tfds_sources",
    "folder": "minimodal.data.folder",
    "requests": "minimodal.data.requests",
    "spoken_shapes": "minimodal.data.spoken_shapes",
}


def source_options(text: str) -> dict[str, Any]:
    """`key=value,key=value` -> {key: value}, integers as int (e.g. "objects=2,background=noise")."""
    options = {}
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"data source options are key=value pairs separated by commas, got {text!r}")
        value = value.strip()
        options[key.strip()] = int(value) if value.lstrip("-").isdigit() else value
    return options


def load_examples(source: str, split: str = "train", n: int | None = None, image_size: int = 32,
                  seed: int = 0, **options: Any) -> dict[str, Any]:
    """Examples from a named source; `folder:PATH` reads a directory of the user's own images, and
    `NAME:key=value,...` passes options to the source (e.g. `shapes:objects=2` for two-object scenes)."""
    name, _, rest = source.partition(":")
    if name not in SOURCES:
        raise ValueError(f"unknown data source {source!r}; choose one of {', '.join(SOURCES)} "
                         "(or folder:PATH for a directory of your own images)")
    module = importlib.import_module(SOURCES[name])
    if name == "folder":
        if not rest:
            raise ValueError("the folder source needs a path: --data folder:PATH/TO/IMAGES")
        options["path"] = rest
    else:
        options.update(source_options(rest))
    if name in ("cifar10", "cifar100", "coco_captions"):
        options["dataset"] = name
    return module.examples(split=split, n=n, image_size=image_size, seed=seed, **options)


__all__ = ["SOURCES", "Batches", "load_examples", "source_options", "normalize_audio", "normalize_images",
           "denormalize_images"]
