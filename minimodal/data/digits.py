"""`digits`: scikit-learn's bundled 8x8 handwritten digits (1,797 images, no download), as captioned RGB.

Pixel values 0..16 (ink) become grey levels round(v / 16 * 255), white ink on black like `shapes`,
upscaled to S x S (bicubic) and repeated over the 3 channels. The train/test split is fixed (a
permutation drawn once with a constant seed, first 80% train), so it never depends on `seed`;
`seed` picks each example's caption template.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import numpy as np

from minimodal.data.images import center_crop_resize_batch, check_image_size, template_captions

CLASS_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
TEMPLATES = [
    "a handwritten digit {digit}",
    "the number {word}",
    "a handwritten {word}",
    "the digit {digit}",
    "a drawing of the number {word}",
    "a handwritten number {digit}",
]
TRAIN_FRACTION = 0.8
_SPLIT_SEED = 20261123  # fixed forever: changing it would move examples between train and test


@functools.cache
def _load() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits: grey uint8 (N, 8, 8) and labels int32 (N,), in scikit-learn's order."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    grey_N88 = np.rint(digits.images / 16.0 * 255.0).astype(np.uint8)  # ink 0..16 -> 0..255
    return grey_N88, digits.target.astype(np.int32)


def split_indices(split: str) -> np.ndarray:
    """Indices into scikit-learn's digits of `split` ('train' or 'test'); disjoint, together all."""
    if split not in ("train", "test"):
        raise ValueError(f"digits has splits 'train' and 'test'; got {split!r}")
    n_all = len(_load()[1])
    perm = np.random.default_rng(_SPLIT_SEED).permutation(n_all)
    n_train = int(round(TRAIN_FRACTION * n_all))
    return perm[:n_train] if split == "train" else perm[n_train:]


def examples(split: str = "train", n: int | None = None, image_size: int = 32, seed: int = 0,
             **options: Any) -> dict[str, Any]:
    """Up to `n` digits of `split` (all when n is None): images uint8 (n, S, S, 3), captions, labels 0..9."""
    if options:
        raise ValueError(f"digits takes no options; got {sorted(options)}")
    size = check_image_size(image_size)
    idx = split_indices(split)
    if n is not None:
        if n > len(idx):
            warnings.warn(f"digits {split!r} has only {len(idx)} examples; returning all of them, not {n}",
                          stacklevel=2)
        idx = idx[:n]
    grey_N88, labels_all = _load()
    grey_NSS = center_crop_resize_batch(grey_N88[idx], size)[..., 0]  # bicubic upscale of the grey image
    images_NSS3 = np.repeat(grey_NSS[..., None], 3, axis=-1)  # grey -> RGB
    labels_N = labels_all[idx]
    fields = [{"digit": str(d), "word": w} for d, w in enumerate(CLASS_NAMES)]
    captions = template_captions(labels_N, fields, TEMPLATES, np.random.default_rng([seed, 0xD161]))
    return {"images": images_NSS3, "captions": captions, "labels": labels_N,
            "class_names": list(CLASS_NAMES)}
