"""Helpers shared by the image sources: any picture -> square uint8 RGB, and captions from templates.

Every source returns images as uint8 (N, S, S, 3). Pictures of another shape are centre-cropped to
their largest central square, side min(H, W), then resized to S x S with PIL (bicubic; PIL widens the
filter when it shrinks, so downscaling is antialiased).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image

RESAMPLE = Image.Resampling.BICUBIC


def to_rgb(image: Image.Image) -> Image.Image:
    """A PIL image of any mode -> mode RGB.

    Transparent pixels are composited onto black (the shapes background); 16/32-bit and float grey
    images are rescaled from their own [min, max] to [0, 255] (PIL would clip them instead).
    """
    if image.mode == "RGB":
        return image
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        x = np.asarray(image, np.float64)
        lo, hi = x.min(), x.max()
        x = (x - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(x)  # min -> 0, max -> 255
        image = Image.fromarray(np.rint(x).astype(np.uint8), "L")
    if image.mode == "P" or image.mode.upper().endswith("A"):  # palette (maybe transparent), RGBA, LA, PA
        rgba = image.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, rgba).convert("RGB")  # out = a * rgb + (1 - a) * 0
    return image.convert("RGB")


def center_crop_resize(image: Image.Image | np.ndarray, size: int) -> np.ndarray:
    """Centre-crop to the largest square, resize to `size` x `size`: uint8 (size, size, 3)."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    image = to_rgb(image)
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    image = image.crop((left, top, left + side, top + side))
    if side != size:
        image = image.resize((size, size), RESAMPLE)
    return np.asarray(image, np.uint8)


def center_crop_resize_batch(images: Sequence[np.ndarray] | np.ndarray, size: int) -> np.ndarray:
    """`center_crop_resize` over N pictures (any sizes): uint8 (N, size, size, 3)."""
    out_NSS3 = np.empty((len(images), size, size, 3), np.uint8)
    for i, image in enumerate(images):
        out_NSS3[i] = center_crop_resize(image, size)
    return out_NSS3


def check_image_size(image_size: int) -> int:
    """Validate the configured image size at the boundary."""
    if not isinstance(image_size, (int, np.integer)) or image_size < 4:
        raise ValueError(f"image_size must be an int >= 4 (16, 32 or 64 are typical); got {image_size!r}")
    return int(image_size)


def with_article(noun: str) -> str:
    """'airplane' -> 'an airplane', 'cat' -> 'a cat'."""
    return ("an " if noun[:1].lower() in "aeiou" else "a ") + noun


def template_captions(labels: np.ndarray, fields: Sequence[dict[str, str]], templates: Sequence[str],
                      rng: np.random.Generator) -> list[str]:
    """One caption per label: a template drawn uniformly by `rng`, filled with that class's `fields`.

    E.g. templates ["a photo of {a_name}"] with fields[3] = {"a_name": "a cat"} -> "a photo of a cat".
    """
    choice_N = rng.integers(len(templates), size=len(labels))
    return [templates[t].format(**fields[label]) for t, label in zip(choice_N, labels)]
