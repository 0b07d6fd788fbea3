"""Shared layers: attention against a naive numpy reference, masking, equivariance, the KV cache."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from minimodal.nn import Attention, Block, PatchEmbed, Transformer, causal_mask


def naive_attention(attn: Attention, x, context=None, mask=None):
    """softmax(Q Kᵀ / √K) V per head in float64 numpy, from the layer's own weights."""
    x = np.asarray(x, np.float64)
    H, K = attn.num_heads, attn.head_dim

    def dense(layer, z):
        return z @ np.asarray(layer.kernel[...], np.float64) + np.asarray(layer.bias[...])

    if context is None:
        q, k, v = np.split(dense(attn.qkv, x), 3, axis=-1)
    else:
        q = dense(attn.q, x)
        k, v = np.split(dense(attn.kv, np.asarray(context, np.float64)), 2, axis=-1)
    B, T = x.shape[0], x.shape[1]
    q, k, v = (a.reshape(B, -1, H, K).transpose(0, 2, 1, 3) for a in (q, k, v))  # (B, H, ., K)
    logits = q @ k.transpose(0, 1, 3, 2) / np.sqrt(K)  # (B, H, T, S)
    if mask is not None:
        logits = np.where(np.broadcast_to(mask, logits.shape), logits, -np.inf)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    y = (w @ v).transpose(0, 2, 1, 3).reshape(B, T, H * K)
    return dense(attn.out, y)


@pytest.fixture
def x_BTD():
    return jax.random.normal(jax.random.key(1), (2, 7, 16))


def test_self_attention_matches_naive(x_BTD):
    attn = Attention(16, 4, rngs=nnx.Rngs(0))
    np.testing.assert_allclose(attn(x_BTD), naive_attention(attn, x_BTD), rtol=1e-4, atol=1e-5)


def test_causal_attention_matches_naive(x_BTD):
    attn = Attention(16, 4, rngs=nnx.Rngs(0))
    mask = causal_mask(7)
    assert mask.dtype == jnp.bool_ and bool(mask[3, 3]) and not bool(mask[2, 3])
    np.testing.assert_allclose(attn(x_BTD, mask=mask), naive_attention(attn, x_BTD, mask=np.asarray(mask)),
                               rtol=1e-4, atol=1e-5)


def test_cross_attention_matches_naive(x_BTD):
    attn = Attention(16, 2, context_dim=12, rngs=nnx.Rngs(0))
    context_BSD = jax.random.normal(jax.random.key(2), (2, 5, 12))
    mask_B11S = jnp.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)[:, None, None, :]
    np.testing.assert_allclose(attn(x_BTD, context_BSD=context_BSD, mask=mask_B11S),
                               naive_attention(attn, x_BTD, np.asarray(context_BSD), np.asarray(mask_B11S)),
                               rtol=1e-4, atol=1e-5)


def test_masked_key_has_exactly_zero_influence():
    attn = Attention(8, 2, context_dim=8, rngs=nnx.Rngs(0))
    x_BTD = jax.random.normal(jax.random.key(0), (1, 3, 8))
    context_BSD = jax.random.normal(jax.random.key(1), (1, 4, 8))
    mask = jnp.array([True, True, False, True])  # key 2 is masked for every query
    y = attn(x_BTD, context_BSD=context_BSD, mask=mask)
    perturbed = context_BSD.at[0, 2].add(100.0)
    np.testing.assert_array_equal(attn(x_BTD, context_BSD=perturbed, mask=mask), y)
    grad = jax.grad(lambda c: attn(x_BTD, context_BSD=c, mask=mask).sum())(context_BSD)
    np.testing.assert_array_equal(grad[0, 2], 0.0)
    assert np.abs(np.asarray(grad[0, [0, 1, 3]])).min() > 0  # the unmasked keys do matter
    # and the mask does something: without it, the same perturbation changes the output
    assert not np.allclose(attn(x_BTD, context_BSD=perturbed), attn(x_BTD, context_BSD=context_BSD))


def test_causal_future_tokens_have_no_influence(x_BTD):
    model = Transformer(16, 2, 4, rngs=nnx.Rngs(0))
    mask = causal_mask(7)
    y = model(x_BTD, mask=mask)
    y2 = model(x_BTD.at[:, 4:].set(5.0), mask=mask)
    np.testing.assert_array_equal(y[:, :4], y2[:, :4])
    assert not np.allclose(y[:, 4:], y2[:, 4:])


def test_unmasked_self_attention_is_permutation_equivariant(x_BTD):
    block = Block(16, 4, rngs=nnx.Rngs(0))
    perm = np.array([3, 0, 6, 1, 5, 2, 4])
    np.testing.assert_allclose(block(x_BTD[:, perm]), block(x_BTD)[:, perm], rtol=1e-5, atol=1e-5)


def test_bad_inputs_are_clear_errors(x_BTD):
    with pytest.raises(ValueError, match="divisible"):
        Attention(10, 4, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="context_BSD"):
        Attention(16, 4, context_dim=8, rngs=nnx.Rngs(0))(x_BTD)
    with pytest.raises(ValueError, match="cross"):
        Block(16, 4, rngs=nnx.Rngs(0))(x_BTD, context_BSD=x_BTD)


def test_block_with_cross_attention_uses_context(x_BTD):
    block = Block(16, 4, cross_dim=6, rngs=nnx.Rngs(0))
    c1, c2 = jax.random.normal(jax.random.key(3), (2, 2, 3, 6))
    y1 = block(x_BTD, context_BSD=c1)
    assert y1.shape == x_BTD.shape
    assert not np.allclose(y1, block(x_BTD, context_BSD=c2))


def test_kv_cache_decode_matches_full_causal_forward():
    model = Transformer(16, 2, 4, cross_dim=8, rngs=nnx.Rngs(0))
    B, T, P = 2, 9, 4  # prefill P positions, then one at a time
    x_BTD = jax.random.normal(jax.random.key(0), (B, T, 16))
    context_BSD = jax.random.normal(jax.random.key(1), (B, 3, 8))
    full = model(x_BTD, mask=causal_mask(T), context_BSD=context_BSD)

    cache = model.init_cache(B, max_len=12)
    assert cache[0]["k"].shape == (B, 12, 4, 4)
    y_prefill, cache = model.decode(x_BTD[:, :P], cache, 0, context_BSD=context_BSD)
    outs = [y_prefill]
    for t in range(P, T):
        y, cache = model.decode(x_BTD[:, t:t + 1], cache, t, context_BSD=context_BSD)
        outs.append(y)
    np.testing.assert_allclose(jnp.concatenate(outs, axis=1), full, rtol=1e-5, atol=1e-5)


def test_kv_cache_decode_inside_jit_and_fori_loop():
    model = Transformer(16, 2, 4, rngs=nnx.Rngs(0))
    B, T = 2, 6
    x_BTD = jax.random.normal(jax.random.key(0), (B, T, 16))
    full = model(x_BTD, mask=causal_mask(T))
    graphdef, state = nnx.split(model)

    @jax.jit
    def decode_all(state, x_BTD):
        model = nnx.merge(graphdef, state)

        def step(t, carry):
            cache, out_BTD = carry
            x_B1D = jax.lax.dynamic_slice_in_dim(x_BTD, t, 1, axis=1)
            y_B1D, cache = model.decode(x_B1D, cache, t)
            return cache, jax.lax.dynamic_update_slice_in_dim(out_BTD, y_B1D, t, axis=1)

        _, out = jax.lax.fori_loop(0, T, step, (model.init_cache(B, T), jnp.zeros_like(x_BTD)))
        return out

    np.testing.assert_allclose(decode_all(state, x_BTD), full, rtol=1e-5, atol=1e-5)


def test_decode_rejects_positions_past_the_cache():
    model = Transformer(8, 1, 2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="do not fit"):
        model.decode(jnp.zeros((1, 2, 8)), model.init_cache(1, 4), 3)


def test_patch_embed_equals_strided_convolution():
    embed = PatchEmbed(4, 3, 10, rngs=nnx.Rngs(0))
    x_BHWC = jax.random.normal(jax.random.key(0), (2, 8, 12, 3))
    y_BND = embed(x_BHWC)
    assert y_BND.shape == (2, 6, 10)
    kernel_PPCD = embed.proj.kernel[...].reshape(4, 4, 3, 10)
    conv = jax.lax.conv_general_dilated(x_BHWC, kernel_PPCD, (4, 4), "VALID",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(y_BND, conv.reshape(2, 6, 10) + embed.proj.bias[...], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="divisible"):
        embed(jnp.zeros((1, 6, 8, 3)))
