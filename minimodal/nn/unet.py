"""U-Net blocks for diffusion: timestep embedding, residual blocks with GroupNorm, attention, resampling.

Legend: B batch, H W height and width, C channels, E embedding width, S context positions, D context width.

    ResBlock(x, e) = skip(x) + Conv(SiLU(GN(Conv(SiLU(GN(x)))) · (1 + γ(e)) + β(e)))    (FiLM by e)
    AttnBlock(x)   = x + SelfAttn(GN(x)) [+ CrossAttn(LN(x), text)]                    (over the H·W grid)
The U-Net: a 3×3 stem, per level `num_res_blocks` ResBlocks (+ attention at the attended levels) and a
stride-2 Downsample, a middle ResBlock–Attn–ResBlock, then the mirror image upwards with each ResBlock
fed the matching skip (concatenated on C), GroupNorm–SiLU–3×3 conv out (zero-initialised, so the
untrained network predicts 0). With `patch` = p > 1 the image is folded p×p -> channels first
(space-to-depth) so every layer runs at (H/p, W/p), and unfolded at the end.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from minimodal.nn.attention import Attention
from minimodal.nn.norm import GroupNorm


def timestep_embedding(t_B: jax.Array, dim: int, max_period: float = 10_000.0) -> jax.Array:
    """Sinusoidal embedding (B,) -> (B, dim): [cos(t ω_i), sin(t ω_i)], ω_i = max_period^(-i / (dim/2))."""
    if dim % 2:
        raise ValueError(f"timestep_embedding needs an even dim, got {dim}")
    half = dim // 2
    omega = jnp.exp(-jnp.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)  # (dim/2,)
    angles_BF = jnp.asarray(t_B, jnp.float32)[:, None] * omega[None, :]
    return jnp.concatenate([jnp.cos(angles_BF), jnp.sin(angles_BF)], axis=-1)


def _conv3(cin: int, cout: int, rngs: nnx.Rngs, *, strides: int = 1, zero: bool = False) -> nnx.Conv:
    init = nnx.initializers.zeros_init() if zero else nnx.initializers.lecun_normal()
    return nnx.Conv(cin, cout, (3, 3), strides=strides, padding=1, kernel_init=init, rngs=rngs)


class ResBlock(nnx.Module):
    """Two GroupNorm–SiLU–conv3×3 layers; the embedding modulates the second norm: h·(1 + γ) + β."""

    def __init__(self, cin: int, cout: int, emb_dim: int, *, groups: int = 8, rngs: nnx.Rngs):
        self.norm1, self.conv1 = GroupNorm(cin, groups), _conv3(cin, cout, rngs)
        self.film = nnx.Linear(emb_dim, 2 * cout, rngs=rngs)
        self.norm2, self.conv2 = GroupNorm(cout, groups), _conv3(cout, cout, rngs, zero=True)
        self.skip = nnx.Conv(cin, cout, (1, 1), rngs=rngs) if cin != cout else None

    def __call__(self, x_BHWC: jax.Array, emb_BE: jax.Array) -> jax.Array:
        h_BHWC = self.conv1(nnx.silu(self.norm1(x_BHWC)))
        scale_BC, shift_BC = jnp.split(self.film(nnx.silu(emb_BE)), 2, axis=-1)
        h_BHWC = self.norm2(h_BHWC) * (1 + scale_BC[:, None, None]) + shift_BC[:, None, None]
        h_BHWC = self.conv2(nnx.silu(h_BHWC))
        return (x_BHWC if self.skip is None else self.skip(x_BHWC)) + h_BHWC


class AttnBlock(nnx.Module):
    """Self-attention over the H·W positions, then (with `context_dim`) cross-attention to the text."""

    def __init__(self, channels: int, num_heads: int, *, context_dim: int | None = None, groups: int = 8,
                 rngs: nnx.Rngs):
        self.norm = GroupNorm(channels, groups)
        self.attn = Attention(channels, num_heads, rngs=rngs)
        if context_dim is not None:
            self.ln_cross = nnx.LayerNorm(channels, rngs=rngs)
            self.cross = Attention(channels, num_heads, context_dim=context_dim, rngs=rngs)
        else:
            self.ln_cross = self.cross = None

    def __call__(self, x_BHWC: jax.Array, context_BSD: jax.Array | None = None,
                 context_mask_BS: jax.Array | None = None) -> jax.Array:
        B, H, W, C = x_BHWC.shape
        x_BNC = x_BHWC.reshape(B, H * W, C)
        x_BNC = x_BNC + self.attn(self.norm(x_BHWC).reshape(B, H * W, C))  # x + SelfAttn(GN(x))
        if self.cross is not None:
            if context_BSD is None:
                raise ValueError("this AttnBlock cross-attends to text: pass context_BSD")
            mask = None if context_mask_BS is None else context_mask_BS[:, None, None, :]  # (B, 1, 1, S)
            x_BNC = x_BNC + self.cross(self.ln_cross(x_BNC), context_BSD=context_BSD, mask=mask)
        return x_BNC.reshape(B, H, W, C)


class Downsample(nnx.Module):
    """Halve H and W with a stride-2 3×3 convolution."""

    def __init__(self, channels: int, *, rngs: nnx.Rngs):
        self.conv = _conv3(channels, channels, rngs, strides=2)

    def __call__(self, x_BHWC: jax.Array) -> jax.Array:
        return self.conv(x_BHWC)


class Upsample(nnx.Module):
    """Double H and W: nearest-neighbour repeat, then a 3×3 convolution."""

    def __init__(self, channels: int, *, rngs: nnx.Rngs):
        self.conv = _conv3(channels, channels, rngs)

    def __call__(self, x_BHWC: jax.Array) -> jax.Array:
        return self.conv(jnp.repeat(jnp.repeat(x_BHWC, 2, axis=1), 2, axis=2))


def space_to_depth(x_BHWC: jax.Array, p: int) -> jax.Array:
    """(B, H, W, C) -> (B, H/p, W/p, p·p·C): each p×p patch becomes one position's channels."""
    B, H, W, C = x_BHWC.shape
    x = x_BHWC.reshape(B, H // p, p, W // p, p, C)
    return jnp.einsum("bhpwqc->bhwpqc", x).reshape(B, H // p, W // p, p * p * C)


def depth_to_space(x_BHWC: jax.Array, p: int) -> jax.Array:
    """Inverse of `space_to_depth`: (B, H, W, p·p·C) -> (B, H·p, W·p, C)."""
    B, H, W, PPC = x_BHWC.shape
    x = x_BHWC.reshape(B, H, W, p, p, PPC // (p * p))
    return jnp.einsum("bhwpqc->bhpwqc", x).reshape(B, H * p, W * p, PPC // (p * p))


class UNet(nnx.Module):
    """ε- or v-prediction network f(x_t, t, e, text) -> (B, H, W, C) for images (B, H, W, C).

    channels: width per level, e.g. (64, 128): one level per entry, a Downsample between levels.
    attention_levels: the levels (0 = full resolution) with AttnBlocks; the middle always has one.
    `cond_dim`: width of an extra per-example embedding added to the timestep embedding (e.g. pooled text).
    `context_dim`: width of the text features the AttnBlocks cross-attend to (None: no cross-attention).
    """

    def __init__(self, *, in_channels: int = 3, channels: Sequence[int] = (64, 128), num_res_blocks: int = 1,
                 attention_levels: Sequence[int] = (1,), num_heads: int = 4, groups: int = 8, patch: int = 1,
                 cond_dim: int | None = None, context_dim: int | None = None, rngs: nnx.Rngs):
        self.patch, self.base = patch, channels[0]
        emb = 4 * channels[0]
        self.time_mlp = nnx.Sequential(nnx.Linear(channels[0], emb, rngs=rngs), nnx.silu,
                                       nnx.Linear(emb, emb, rngs=rngs))
        self.cond_proj = nnx.Linear(cond_dim, emb, rngs=rngs) if cond_dim is not None else None
        block = lambda cin, cout: ResBlock(cin, cout, emb, groups=groups, rngs=rngs)  # noqa: E731
        attn = lambda c: AttnBlock(c, num_heads, context_dim=context_dim, groups=groups, rngs=rngs)  # noqa: E731
        self.stem = _conv3(in_channels * patch * patch, channels[0], rngs)

        down, skips, c = [], [channels[0]], channels[0]
        for level, width in enumerate(channels):
            for _ in range(num_res_blocks):
                down.append((block(c, width), attn(width) if level in attention_levels else None))
                c = width
                skips.append(c)
            if level < len(channels) - 1:
                down.append(Downsample(c, rngs=rngs))
                skips.append(c)
        self.down = nnx.List([nnx.List(d) if isinstance(d, tuple) else d for d in down])
        self.mid = nnx.List([block(c, c), attn(c), block(c, c)])

        up = []
        for level, width in reversed(list(enumerate(channels))):
            for _ in range(num_res_blocks + 1):
                up.append(nnx.List([block(c + skips.pop(), width),
                                    attn(width) if level in attention_levels else None]))
                c = width
            if level > 0:
                up.append(Upsample(c, rngs=rngs))
        self.up = nnx.List(up)
        self.out_norm = GroupNorm(c, groups)
        self.out_conv = _conv3(c, in_channels * patch * patch, rngs, zero=True)

    def __call__(self, x_BHWC: jax.Array, t_B: jax.Array, cond_BF: jax.Array | None = None,
                 context_BSD: jax.Array | None = None, context_mask_BS: jax.Array | None = None) -> jax.Array:
        if x_BHWC.shape[1] % (self.patch * 2 ** (self._levels - 1)) or x_BHWC.shape[2] != x_BHWC.shape[1]:
            raise ValueError(f"the U-Net needs square images whose side divides by "
                             f"{self.patch * 2 ** (self._levels - 1)}; got {x_BHWC.shape}")
        emb_BE = self.time_mlp(timestep_embedding(t_B, self.base))
        if self.cond_proj is not None:
            emb_BE = emb_BE + self.cond_proj(cond_BF)
        text = (context_BSD, context_mask_BS)
        h = self.stem(space_to_depth(x_BHWC, self.patch) if self.patch > 1 else x_BHWC)
        skips = [h]
        for layer in self.down:
            if isinstance(layer, Downsample):
                h = layer(h)
            else:
                res, attn = layer
                h = res(h, emb_BE)
                h = attn(h, *text) if attn is not None else h
            skips.append(h)
        h = self.mid[2](self.mid[1](self.mid[0](h, emb_BE), *text), emb_BE)
        for layer in self.up:
            if isinstance(layer, Upsample):
                h = layer(h)
            else:
                res, attn = layer
                h = res(jnp.concatenate([h, skips.pop()], axis=-1), emb_BE)
                h = attn(h, *text) if attn is not None else h
        out = self.out_conv(nnx.silu(self.out_norm(h)))
        return depth_to_space(out, self.patch) if self.patch > 1 else out

    @property
    def _levels(self) -> int:
        return sum(isinstance(layer, Downsample) for layer in self.down) + 1
