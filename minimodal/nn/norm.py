"""Group normalisation for (B, H, W, C) activations, written for XLA's CPU backend.

Legend: B batch, H W height and width, C channels, G groups, N = H·W positions.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


class GroupNorm(nnx.Module):
    """GroupNorm over (H, W, C/G) per example and group g: y = (x - μ_g) / √(σ²_g + ε) · γ + β, σ²_g = E[x²] - μ_g².

    The group statistics are matrix products with a (C, G) one-hot group matrix rather than reductions over
    strided axes, which XLA's CPU backend runs slowly: the fast DDPM's training step is ~13% faster on a CPU
    core than with `nnx.GroupNorm`, whose parameters (`scale`, `bias`) and values (up to rounding) it keeps, so
    checkpoints written with either load into the other. Every convolutional model here uses this one.
    """

    def __init__(self, channels: int, groups: int, *, epsilon: float = 1e-6):
        if channels % groups:
            raise ValueError(f"GroupNorm: {channels} channels are not divisible into {groups} groups")
        self.groups, self.epsilon = groups, epsilon
        self.scale = nnx.Param(jnp.ones((channels,)))
        self.bias = nnx.Param(jnp.zeros((channels,)))

    def __call__(self, x_BHWC: jax.Array) -> jax.Array:
        B, H, W, C = x_BHWC.shape
        group_CG = (jnp.arange(C)[:, None] // (C // self.groups) == jnp.arange(self.groups)).astype(x_BHWC.dtype)
        n = H * W * (C // self.groups)  # values per group
        x_BNC = x_BHWC.reshape(B, H * W, C)
        sums = lambda v_BNC: jnp.einsum("bnc,cg->bg", v_BNC, group_CG, precision="highest")  # noqa: E731
        mean_BG = sums(x_BNC) / n
        var_BG = jnp.maximum(sums(x_BNC * x_BNC) / n - mean_BG**2, 0.0)
        per_channel = lambda v_BG: jnp.einsum("bg,cg->bc", v_BG, group_CG, precision="highest")  # noqa: E731
        scale_BC = per_channel(jax.lax.rsqrt(var_BG + self.epsilon)) * self.scale[...]
        shift_BC = self.bias[...] - per_channel(mean_BG) * scale_BC
        return x_BHWC * scale_BC[:, None, None] + shift_BC[:, None, None]
