"""The one training loop. (Interface first; the loop itself lands next.)"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np
from flax import nnx

from minimodal.config import TrainConfig


@dataclasses.dataclass(frozen=True)
class Family:
    """What a model family gives the trainer; the loop owns everything else.

    build(config, tokenizer, rngs) -> nnx.Module
    loss_fn(model, batch, rng) -> (scalar loss, {name: scalar}); pure, jit-able, no host sync.
        `batch` is the pipeline's dict (images float32 (B,H,W,3) in [-1,1], tokens int32 (B,T), extras).
    prepare(config, examples, tokenizer, workdir) -> examples     optional: add arrays (e.g. image tokens)
    sample_grid(model, config, tokenizer, rng) -> uint8 (N,H,W,3)  optional: periodic PNG sample grids
    evaluate(model, config, tokenizer, workdir) -> {name: float}   optional: `minimodal eval` + periodic
    pipeline(model, config, tokenizer, workdir) -> object          what `minimodal.load(workdir)` returns
    """

    name: str
    config_class: type
    presets: dict[str, TrainConfig]  # at least "default" (CPU shapes), "tiny" (tests), "gpu"
    build: Callable[..., nnx.Module]
    loss_fn: Callable[[nnx.Module, dict[str, Any], jax.Array], tuple[jax.Array, dict[str, jax.Array]]]
    prepare: Callable[..., dict[str, Any]] | None = None
    sample_grid: Callable[..., np.ndarray] | None = None
    evaluate: Callable[..., dict[str, float]] | None = None
    pipeline: Callable[..., Any] | None = None
