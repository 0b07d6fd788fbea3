"""U-Net layers: the sinusoidal embedding's formula, exact identities at init, masking, shapes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from minimodal.nn import GroupNorm
from minimodal.nn.unet import (AttnBlock, Downsample, ResBlock, UNet, Upsample, depth_to_space,
                               space_to_depth, timestep_embedding)


def test_timestep_embedding_matches_formula():
    t = np.array([0, 1, 17, 999])
    emb = np.asarray(timestep_embedding(jnp.asarray(t), 8))
    omega = 10_000.0 ** (-np.arange(4) / 4)  # ω_i = 10000^(-i / (dim/2))
    expected = np.concatenate([np.cos(t[:, None] * omega), np.sin(t[:, None] * omega)], axis=1)
    np.testing.assert_allclose(emb, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(emb[0], [1, 1, 1, 1, 0, 0, 0, 0])  # t = 0: cos 0 = 1, sin 0 = 0
    with pytest.raises(ValueError, match="even"):
        timestep_embedding(jnp.zeros(2), 7)


def test_space_to_depth_is_a_lossless_patch_fold():
    x = jnp.arange(2 * 4 * 4 * 3, dtype=jnp.float32).reshape(2, 4, 4, 3)
    folded = space_to_depth(x, 2)
    assert folded.shape == (2, 2, 2, 12)
    np.testing.assert_array_equal(folded[0, 1, 0].reshape(2, 2, 3), x[0, 2:4, 0:2])  # patch (1, 0)
    np.testing.assert_array_equal(depth_to_space(folded, 2), x)


def test_group_norm_matches_its_formula_and_flax_with_the_same_parameters():
    """y = (x - μ_g) / √(σ²_g + ε) · γ + β per example and group of C/G channels (over H, W too)."""
    x = 3.0 + 2.0 * jax.random.normal(jax.random.key(0), (2, 4, 4, 12))  # a mean far from 0: E[x²] - μ² holds
    norm = GroupNorm(12, 3)
    norm.scale[...] = jnp.linspace(0.5, 2.0, 12)
    norm.bias[...] = jnp.linspace(-1.0, 1.0, 12)
    groups = np.asarray(x).reshape(2, 16, 3, 4)
    mean, var = groups.mean(axis=(1, 3), keepdims=True), groups.var(axis=(1, 3), keepdims=True)
    expected = ((groups - mean) / np.sqrt(var + 1e-6)).reshape(2, 4, 4, 12) * np.asarray(norm.scale[...]) \
        + np.asarray(norm.bias[...])
    np.testing.assert_allclose(norm(x), expected, atol=2e-5)
    flax_norm = nnx.GroupNorm(12, num_groups=3, rngs=nnx.Rngs(0))
    nnx.update(flax_norm, nnx.state(norm))  # the same parameter names and shapes: checkpoints carry over
    np.testing.assert_allclose(norm(x), flax_norm(x), atol=2e-5)
    with pytest.raises(ValueError, match="not divisible"):
        GroupNorm(12, 5)


def test_resblock_is_the_identity_at_init_and_film_needs_training():
    """conv2 starts at zero, so ResBlock(x, e) = x for every embedding e when channels match."""
    block = ResBlock(16, 16, 8, groups=4, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (2, 8, 8, 16))
    np.testing.assert_array_equal(block(x, jax.random.normal(jax.random.key(2), (2, 8))), x)
    wide = ResBlock(16, 32, 8, groups=4, rngs=nnx.Rngs(0))
    np.testing.assert_allclose(wide(x, jnp.zeros((2, 8))), wide.skip(x), atol=1e-6)


def test_resblock_embedding_modulates_the_output():
    block = ResBlock(8, 8, 4, groups=2, rngs=nnx.Rngs(0))
    block.conv2.kernel[...] = jax.random.normal(jax.random.key(3), block.conv2.kernel.shape)
    x = jax.random.normal(jax.random.key(1), (1, 4, 4, 8))
    assert not np.allclose(block(x, jnp.zeros((1, 4))), block(x, jnp.ones((1, 4))))


def test_cross_attention_ignores_masked_text_positions():
    block = AttnBlock(16, 2, context_dim=8, groups=4, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (2, 4, 4, 16))
    ctx = jax.random.normal(jax.random.key(1), (2, 5, 8))
    mask = jnp.array([[1, 1, 1, 0, 0], [1, 1, 0, 0, 0]], bool)
    changed = ctx.at[:, 3:].set(100.0)  # only masked positions differ
    np.testing.assert_allclose(block(x, ctx, mask), block(x, changed, mask), atol=1e-5)
    assert not np.allclose(block(x, ctx, mask), block(x, ctx.at[:, 0].set(100.0), mask), atol=1e-3)
    with pytest.raises(ValueError, match="context_BSD"):
        block(x)


def test_resampling_shapes():
    x = jnp.ones((2, 8, 8, 4))
    assert Downsample(4, rngs=nnx.Rngs(0))(x).shape == (2, 4, 4, 4)
    assert Upsample(4, rngs=nnx.Rngs(0))(x).shape == (2, 16, 16, 4)


call = nnx.jit(lambda module, *args: module(*args))  # one compiled program, not hundreds of eager ops


def perturb(module: nnx.Module) -> None:
    """Add N(0, 0.1²) to every parameter, so that no zero-initialised layer hides an input."""
    params = nnx.state(module, nnx.Param)
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(7), len(leaves))
    nnx.update(module, jax.tree.unflatten(
        treedef, [p + 0.1 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)]))


@pytest.mark.parametrize("patch", [1, 2])
def test_unet_shapes_zero_init_and_conditioning(patch):
    unet = UNet(channels=(8, 16), attention_levels=(1,), num_heads=2, groups=4, patch=patch, cond_dim=6,
                context_dim=6, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (3, 8, 8, 3))
    t = jnp.array([0, 5, 9])
    args = (jnp.ones((3, 6)), jnp.ones((3, 4, 6)), jnp.ones((3, 4), bool))
    out = call(unet, x, t, *args)
    assert out.shape == x.shape
    np.testing.assert_array_equal(out, 0.0)  # zero-initialised output conv: the untrained net predicts 0
    perturb(unet)
    out = call(unet, x, t, *args)
    assert not np.allclose(out, call(unet, x, t + 1, *args))  # the timestep matters
    assert not np.allclose(out, call(unet, x, t, 2 * args[0], *args[1:]))  # the condition matters
    with pytest.raises(ValueError, match="square images"):
        unet(jnp.ones((1, 5, 5, 3)), t[:1], *(a[:1] for a in args))


def test_unet_without_attention_or_text():
    unet = UNet(channels=(8, 8, 16), attention_levels=(), num_res_blocks=2, groups=4, rngs=nnx.Rngs(0))
    assert call(unet, jnp.ones((1, 16, 16, 3)), jnp.zeros(1, jnp.int32)).shape == (1, 16, 16, 3)
