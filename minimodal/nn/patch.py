"""Patch embedding for Vision Transformers.

Legend: B batch, N patches (h·w), D width, C channels, P patch side.

An image (B, H, W, C) is cut into non-overlapping P×P patches, each flattened to P·P·C values and
mapped linearly to D: the same as a P×P convolution with stride P, written as one matmul (faster than
a strided convolution on XLA's CPU backend). Patches are ordered row-major over the (H/P, W/P) grid.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


class PatchEmbed(nnx.Module):
    def __init__(self, patch: int, in_ch: int, dim: int, rngs: nnx.Rngs):
        self.patch, self.in_ch = patch, in_ch
        self.proj = nnx.Linear(patch * patch * in_ch, dim, rngs=rngs)

    def __call__(self, x_BHWC: jax.Array) -> jax.Array:
        B, H, W, C = x_BHWC.shape
        P = self.patch
        if H % P or W % P or C != self.in_ch:
            raise ValueError(f"PatchEmbed(patch={P}, in_ch={self.in_ch}) needs (B, H, W, {self.in_ch}) with "
                             f"H and W divisible by {P}; got {x_BHWC.shape}")
        patches_BhPwPC = x_BHWC.reshape(B, H // P, P, W // P, P, C)
        patches_BhwPPC = jnp.transpose(patches_BhPwPC, (0, 1, 3, 2, 4, 5))
        patches_BNX = patches_BhwPPC.reshape(B, (H // P) * (W // P), P * P * C)
        return self.proj(patches_BNX)  # (B, N, D)
