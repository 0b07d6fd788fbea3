"""Pre-LN transformer blocks with optional cross-attention, and a KV cache for decoding.

Legend: B batch, T positions, S context positions, D width, H heads, K head width, L cache length.

    Block:  x ← x + SelfAttn(LN(x));  x ← x + CrossAttn(LN(x), context);  x ← x + MLP(LN(x))
    MLP(x) = W₂ GELU(W₁ x + b₁) + b₂,  W₁: D -> mlp_ratio·D

Decoding caches each layer's keys and values: `init_cache` allocates (B, L, H, K) zeros per layer;
`decode(x_BTD, cache, pos)` writes the keys/values of positions [pos, pos+T) and lets query pos+t attend to
keys 0..pos+t. Prefill with T > 1, then feed one token at a time; the result equals the full causal
forward pass. With cross-attention, `context_kv(context_BSD)` projects every layer's context keys/values once
(an encoder-decoder's decoder then reuses them at every step: `decode(..., context_kv=...)`).
Callers add positional embeddings themselves (the transformer is position-agnostic); a self-attention
`bias` (H, T, S), e.g. a learned relative position bias, is added to every layer's attention logits (`decode`
takes the rows of the queries it runs: (H, T, L)).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from minimodal.nn.attention import Attention, dot_product_attention

Cache = list[dict[str, jax.Array]]  # per layer: {"k": (B, L, H, K), "v": (B, L, H, K)}
ContextKV = list[tuple[jax.Array, jax.Array]]  # per layer: cross-attention (k, v), each (B, S, H, K)


class Block(nnx.Module):
    """One pre-LN transformer block: self-attention, optional cross-attention, GELU MLP."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: int = 4, *, cross_dim: int | None = None,
                 rngs: nnx.Rngs):
        self.ln_attn = nnx.LayerNorm(dim, rngs=rngs)
        self.attn = Attention(dim, num_heads, rngs=rngs)
        if cross_dim is not None:
            self.ln_cross = nnx.LayerNorm(dim, rngs=rngs)
            self.cross = Attention(dim, num_heads, context_dim=cross_dim, rngs=rngs)
        else:
            self.ln_cross = self.cross = None
        self.ln_mlp = nnx.LayerNorm(dim, rngs=rngs)
        self.fc1 = nnx.Linear(dim, mlp_ratio * dim, rngs=rngs)
        self.fc2 = nnx.Linear(mlp_ratio * dim, dim, rngs=rngs)

    def _cross_and_mlp(self, x_BTD: jax.Array, context_BSD: jax.Array | None,
                       context_mask: jax.Array | None, context_kv: tuple[jax.Array, jax.Array] | None = None
                       ) -> jax.Array:
        if self.cross is not None:
            if context_kv is not None:  # keys/values projected once by `Transformer.context_kv`
                x_BTD = x_BTD + self.cross.attend(self.ln_cross(x_BTD), *context_kv, mask=context_mask)
            elif context_BSD is None:
                raise ValueError("this Block has cross-attention (cross_dim set): pass context_BSD")
            else:  # x ← x + CrossAttn(LN(x), context)
                x_BTD = x_BTD + self.cross(self.ln_cross(x_BTD), context_BSD=context_BSD, mask=context_mask)
        elif context_BSD is not None or context_kv is not None:
            raise ValueError("got context_BSD but this Block has no cross-attention "
                             "(build it with cross_dim)")
        # x ← x + W₂ GELU(W₁ LN(x))
        return x_BTD + self.fc2(jax.nn.gelu(self.fc1(self.ln_mlp(x_BTD))))

    def __call__(self, x_BTD: jax.Array, *, mask: jax.Array | None = None, bias: jax.Array | None = None,
                 context_BSD: jax.Array | None = None, context_mask: jax.Array | None = None) -> jax.Array:
        x_BTD = x_BTD + self.attn(self.ln_attn(x_BTD), mask=mask, bias=bias)  # x ← x + SelfAttn(LN(x))
        return self._cross_and_mlp(x_BTD, context_BSD, context_mask)

    def decode(self, x_BTD: jax.Array, cache: dict[str, jax.Array], pos: Any, *, bias: jax.Array | None = None,
               context_BSD: jax.Array | None = None, context_mask: jax.Array | None = None,
               context_kv: tuple[jax.Array, jax.Array] | None = None):
        """Causal self-attention of positions [pos, pos+T) against the cache; returns (y_BTD, cache)."""
        q_BTHK, k_BTHK, v_BTHK = self.attn.project(self.ln_attn(x_BTD))
        k_BLHK = jax.lax.dynamic_update_slice(cache["k"], k_BTHK.astype(cache["k"].dtype), (0, pos, 0, 0))
        v_BLHK = jax.lax.dynamic_update_slice(cache["v"], v_BTHK.astype(cache["v"].dtype), (0, pos, 0, 0))
        T, L = x_BTD.shape[1], k_BLHK.shape[1]
        mask_TL = (pos + jnp.arange(T))[:, None] >= jnp.arange(L)[None, :]  # key s <= query pos + t
        dtype = q_BTHK.dtype
        y_BTHK = dot_product_attention(q_BTHK, k_BLHK.astype(dtype), v_BLHK.astype(dtype), mask_TL, bias)
        x_BTD = x_BTD + self.attn.merge(y_BTHK)
        return self._cross_and_mlp(x_BTD, context_BSD, context_mask, context_kv), {"k": k_BLHK, "v": v_BLHK}


class Transformer(nnx.Module):
    """A stack of `depth` pre-LN blocks followed by a final LayerNorm."""

    def __init__(self, dim: int, depth: int, num_heads: int, *, mlp_ratio: int = 4,
                 cross_dim: int | None = None, rngs: nnx.Rngs):
        self.dim, self.num_heads = dim, num_heads
        self.blocks = nnx.List([Block(dim, num_heads, mlp_ratio, cross_dim=cross_dim, rngs=rngs)
                                for _ in range(depth)])
        self.ln_final = nnx.LayerNorm(dim, rngs=rngs)

    def __call__(self, x_BTD: jax.Array, *, mask: jax.Array | None = None, bias: jax.Array | None = None,
                 context_BSD: jax.Array | None = None, context_mask: jax.Array | None = None) -> jax.Array:
        for block in self.blocks:
            x_BTD = block(x_BTD, mask=mask, bias=bias, context_BSD=context_BSD, context_mask=context_mask)
        return self.ln_final(x_BTD)

    def init_cache(self, batch: int, max_len: int, dtype: Any = jnp.float32) -> Cache:
        """Zeroed keys/values for every layer: a list of {"k", "v"} arrays (B, L, H, K)."""
        shape = (batch, max_len, self.num_heads, self.dim // self.num_heads)
        return [{"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)} for _ in self.blocks]

    def context_kv(self, context_BSD: jax.Array) -> ContextKV:
        """Every layer's cross-attention keys and values of a context, for `decode(..., context_kv=...)`."""
        if self.blocks[0].cross is None:
            raise ValueError("context_kv needs a Transformer with cross-attention (build it with cross_dim)")
        return [block.cross.context_kv(context_BSD) for block in self.blocks]

    def decode(self, x_BTD: jax.Array, cache: Cache, pos: Any, *, bias: jax.Array | None = None,
               context_BSD: jax.Array | None = None, context_mask: jax.Array | None = None,
               context_kv: ContextKV | None = None) -> tuple[jax.Array, Cache]:
        """Outputs for positions [pos, pos+T) given the cache of positions [0, pos); returns (y_BTD, cache).
        `bias` (H, T, L): the self-attention bias of these T queries against every cache position.
        Cross-attention reads `context_kv` (from `context_kv(context_BSD)`) if given, else projects context_BSD.

        `pos` may be a traced integer (inside jit / fori_loop). With a Python int it is checked against
        the cache length; a traced pos past the end would be clamped by `dynamic_update_slice`.
        """
        if isinstance(pos, int) and not 0 <= pos <= cache[0]["k"].shape[1] - x_BTD.shape[1]:
            raise ValueError(f"positions [{pos}, {pos + x_BTD.shape[1]}) do not fit a cache of length "
                             f"{cache[0]['k'].shape[1]}")
        new_cache = []
        for i, (block, layer_cache) in enumerate(zip(self.blocks, cache)):
            x_BTD, layer_cache = block.decode(x_BTD, layer_cache, pos, bias=bias, context_BSD=context_BSD,
                                              context_mask=context_mask,
                                              context_kv=None if context_kv is None else context_kv[i])
            new_cache.append(layer_cache)
        return self.ln_final(x_BTD), new_cache
