"""The one data pipeline: examples -> normalised, tokenised, (sharded) batches.

Examples are a dict of arrays with a shared leading dimension N, plus `captions` (list of N str):
    images uint8 (N, H, W, 3) and/or waveforms int16 (N, L) (speech) or neither (text), captions list[str], and optional
    extras (labels int (N,), image_tokens, ...).
Batches are dicts of arrays with leading dimension B:
    images float32 (B, H, W, 3) in [-1, 1] and/or waveforms float32 (B, L) in [-1, 1], tokens int32 (B, T),
    and every other array of the examples.

Batch `step` of a run is a pure function of (seed, step): each epoch is a fresh permutation drawn from
`numpy.random.default_rng([seed, epoch])`, so a resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np


def normalize_images(images_uint8: np.ndarray) -> np.ndarray:
    """uint8 [0, 255] -> float32 [-1, 1]: x / 127.5 - 1. The only place this conversion lives."""
    return np.asarray(images_uint8, np.float32) / 127.5 - 1.0


def denormalize_images(images: Any) -> np.ndarray:
    """float [-1, 1] -> uint8 [0, 255] (clipped, rounded); inverse of `normalize_images`."""
    x = (np.asarray(images, np.float32) + 1.0) * 127.5
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def normalize_audio(waveforms: np.ndarray) -> np.ndarray:
    """int16 PCM -> float32 in [-1, 1): x / 32768 (float waveforms pass through as float32)."""
    waveforms = np.asarray(waveforms)
    if np.issubdtype(waveforms.dtype, np.integer):
        return waveforms.astype(np.float32) / 32768.0
    return waveforms.astype(np.float32, copy=False)


def num_examples(examples: dict[str, Any]) -> int:
    return len(examples["captions"])


def check_examples(examples: dict[str, Any]) -> None:
    """Validate the example format at the boundary, with a message that names the problem."""
    if "captions" not in examples:  # text alone is an example too (the assistant's requests)
        raise ValueError(f"examples need 'captions' (and 'images' and/or 'waveforms'); got keys {sorted(examples)}")
    images = examples.get("images")
    if images is not None and (not isinstance(images, np.ndarray) or images.dtype != np.uint8
                               or images.ndim != 4 or images.shape[-1] != 3):
        raise ValueError(f"examples['images'] must be a uint8 numpy array (N, H, W, 3); got "
                         f"{getattr(images, 'dtype', type(images).__name__)} {getattr(images, 'shape', '')}")
    waveforms = examples.get("waveforms")
    if waveforms is not None and (not isinstance(waveforms, np.ndarray) or waveforms.ndim != 2 or
                                  waveforms.dtype not in (np.int16, np.float32)):
        raise ValueError(f"examples['waveforms'] must be an int16 or float32 numpy array (N, L); got "
                         f"{getattr(waveforms, 'dtype', type(waveforms).__name__)} {getattr(waveforms, 'shape', '')}")
    n = len(examples["captions"])
    for key, value in examples.items():
        if isinstance(value, np.ndarray) and (value.ndim == 0 or value.shape[0] != n):
            raise ValueError(f"examples[{key!r}] has {value.shape[0]} rows but there are {n} captions")


class Batches:
    """Deterministic, resumable batches over in-memory examples.

    Captions are tokenised once up front (`tokens` int32 (N, T)); `batch(step)` gathers B rows,
    normalises the images and waveforms and, given a `jax.sharding.Sharding`, places the batch across devices.
    """

    def __init__(self, examples: dict[str, Any], tokenizer: Any, batch_size: int, context_length: int,
                 seed: int = 0, sharding: Any = None):
        check_examples(examples)
        n = num_examples(examples)
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if sharding is not None and batch_size % len(sharding.device_set):
            raise ValueError(f"batch_size={batch_size} must be a multiple of the {len(sharding.device_set)} "
                             "devices the batch is split over")
        if batch_size > n:
            raise ValueError(f"batch_size={batch_size} is larger than the data set ({n} examples)")
        self.batch_size, self.seed, self.sharding = batch_size, seed, sharding
        self.steps_per_epoch = n // batch_size  # the last partial batch of each epoch is dropped
        self.arrays = {k: v for k, v in examples.items() if isinstance(v, np.ndarray)}
        self.arrays["tokens"] = tokenizer.encode_batch(list(examples["captions"]), context_length)
        self._epoch, self._perm = -1, None

    def indices(self, step: int) -> np.ndarray:
        """Example indices of batch `step`: int (B,)."""
        epoch, i = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self._epoch = epoch
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.arrays["tokens"]))
        return self._perm[i * self.batch_size:(i + 1) * self.batch_size]

    def batch(self, step: int) -> dict[str, Any]:
        """Batch `step`; with a sharding, a global array of which each process builds only its own rows."""
        idx = self.indices(step)
        if self.sharding is not None:
            import jax

            rows = self.batch_size // jax.process_count()  # one host: all of them
            idx = idx[jax.process_index() * rows:(jax.process_index() + 1) * rows]
        out = {k: v[idx] for k, v in self.arrays.items()}
        if "images" in out:
            out["images"] = normalize_images(out["images"])  # (B, H, W, 3) float32
        if "waveforms" in out:
            out["waveforms"] = normalize_audio(out["waveforms"])  # (B, L) float32
        if self.sharding is not None:
            out = {k: jax.make_array_from_process_local_data(self.sharding, v) for k, v in out.items()}
        return out

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self.iterate(0)

    def iterate(self, start_step: int = 0) -> Iterator[dict[str, Any]]:
        step = start_step
        while True:
            yield self.batch(step)
            step += 1
