"""Multi-head scaled dot-product attention: self, causal and cross.

Legend: B batch, T query positions, S key positions, D model width, H heads, K head width.

    Attention(Q, K, V) = softmax(Q Kᵀ / √K + bias + mask) V,   per head, heads concatenated then projected.

A boolean `mask` (True = may attend) broadcastable to (B, H, T, S) removes keys exactly: their logits
become the most negative float, so exp(logit - max) underflows to 0 and the gradient through them is 0.
A float `bias` broadcastable to (B, H, T, S) is added to the logits (a learned relative position bias).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


def causal_mask(T: int) -> jax.Array:
    """bool (T, T): query t may attend to key s iff s <= t."""
    return jnp.tril(jnp.ones((T, T), bool))


def dot_product_attention(q_BTHK: jax.Array, k_BSHK: jax.Array, v_BSHK: jax.Array,
                          mask: jax.Array | None = None, bias: jax.Array | None = None) -> jax.Array:
    """softmax(q kᵀ / √K + bias) v per head -> (B, T, H, K); the softmax runs in float32."""
    scale = q_BTHK.shape[-1] ** -0.5
    logits_BHTS = jnp.einsum("bthk,bshk->bhts", q_BTHK, k_BSHK).astype(jnp.float32) * scale
    if bias is not None:
        logits_BHTS = logits_BHTS + bias.astype(jnp.float32)
    if mask is not None:
        logits_BHTS = jnp.where(mask, logits_BHTS, jnp.finfo(jnp.float32).min)
    weights_BHTS = jax.nn.softmax(logits_BHTS, axis=-1).astype(v_BSHK.dtype)
    return jnp.einsum("bhts,bshk->bthk", weights_BHTS, v_BSHK)


class Attention(nnx.Module):
    """Multi-head attention; self-attention when `context_BSD` is None, cross-attention otherwise.

    Self-attention projects q, k, v with one fused matmul (fewer, larger ops); cross-attention
    projects q from x and k, v from the context (width `context_dim`, default `dim`).
    """

    def __init__(self, dim: int, num_heads: int, *, context_dim: int | None = None, rngs: nnx.Rngs):
        if dim % num_heads:
            raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads}")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.is_cross = context_dim is not None
        if self.is_cross:
            self.q = nnx.Linear(dim, dim, rngs=rngs)
            self.kv = nnx.Linear(context_dim, 2 * dim, rngs=rngs)
        else:
            self.qkv = nnx.Linear(dim, 3 * dim, rngs=rngs)
        self.out = nnx.Linear(dim, dim, rngs=rngs)

    def _heads(self, x_BTX: jax.Array, n: int) -> list[jax.Array]:
        """(B, T, n·H·K) -> n arrays (B, T, H, K)."""
        B, T, _ = x_BTX.shape
        return list(jnp.moveaxis(x_BTX.reshape(B, T, n, self.num_heads, self.head_dim), 2, 0))

    def project(self, x_BTD: jax.Array, context_BSD: jax.Array | None = None):
        """q (B, T, H, K) and k, v (B, S, H, K) (S = T for self-attention)."""
        if self.is_cross:
            if context_BSD is None:
                raise ValueError("this Attention was built for cross-attention: pass context_BSD")
            (q_BTHK,) = self._heads(self.q(x_BTD), 1)
            k_BSHK, v_BSHK = self._heads(self.kv(context_BSD), 2)
            return q_BTHK, k_BSHK, v_BSHK
        if context_BSD is not None:
            raise ValueError("this Attention was built for self-attention (context_dim=None) "
                             "but got context_BSD")
        return tuple(self._heads(self.qkv(x_BTD), 3))

    def context_kv(self, context_BSD: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Cross-attention keys and values (B, S, H, K) of a context: computed once, reused at every step."""
        if not self.is_cross:
            raise ValueError("context_kv is for cross-attention (build with context_dim)")
        k_BSHK, v_BSHK = self._heads(self.kv(context_BSD), 2)
        return k_BSHK, v_BSHK

    def attend(self, x_BTD: jax.Array, k_BSHK: jax.Array, v_BSHK: jax.Array,
               mask: jax.Array | None = None) -> jax.Array:
        """Cross-attention of x to precomputed keys/values (from `context_kv`) -> (B, T, D)."""
        (q_BTHK,) = self._heads(self.q(x_BTD), 1)
        return self.merge(dot_product_attention(q_BTHK, k_BSHK, v_BSHK, mask))

    def merge(self, y_BTHK: jax.Array) -> jax.Array:
        """Concatenate heads and project: (B, T, H, K) -> (B, T, D)."""
        B, T = y_BTHK.shape[:2]
        return self.out(y_BTHK.reshape(B, T, self.num_heads * self.head_dim))

    def __call__(self, x_BTD: jax.Array, *, context_BSD: jax.Array | None = None,
                 mask: jax.Array | None = None, bias: jax.Array | None = None) -> jax.Array:
        q_BTHK, k_BSHK, v_BSHK = self.project(x_BTD, context_BSD)
        return self.merge(dot_product_attention(q_BTHK, k_BSHK, v_BSHK, mask, bias))
