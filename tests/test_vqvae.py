"""The image tokenizers: quantisation maths, EMA codebook, Gumbel relaxation, shapes of the interface."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from minimodal import vqvae
from minimodal.config import override

TINY = vqvae.PRESETS["tiny"]


def _images(B=4, S=32, seed=0):
    return jax.random.uniform(jax.random.key(seed), (B, S, S, 3), minval=-1, maxval=1)


def test_nearest_code_matches_brute_force():
    z_ND = jax.random.normal(jax.random.key(0), (200, 5))
    codebook_VD = jax.random.normal(jax.random.key(1), (37, 5))
    d_NV = np.sum((np.asarray(z_ND)[:, None] - np.asarray(codebook_VD)[None]) ** 2, -1)
    np.testing.assert_array_equal(vqvae.nearest_code(z_ND, codebook_VD), d_NV.argmin(1))


def test_straight_through_value_and_identity_gradient():
    z = jnp.array([[0.3, -1.2], [2.0, 0.5]])
    q = jnp.array([[0.0, -1.0], [2.5, 0.0]])
    w = jnp.array([[1.0, 2.0], [-3.0, 4.0]])
    np.testing.assert_allclose(vqvae.straight_through(z, q), q)
    grad = jax.grad(lambda z: jnp.sum(w * vqvae.straight_through(z, q)))(z)
    np.testing.assert_allclose(grad, w)  # d(z_q)/d(z_e) = I


def test_commitment_loss_hand_example_and_no_codebook_gradient():
    z = jnp.array([[1.0, 2.0], [0.0, -1.0]])
    e = jnp.array([[0.0, 2.0], [1.0, 1.0]])
    # mean of squared differences: (1 + 0 + 1 + 4) / 4
    np.testing.assert_allclose(vqvae.commitment_loss(z, e), 1.5)
    g_z, g_e = jax.grad(vqvae.commitment_loss, argnums=(0, 1))(z, e)
    np.testing.assert_allclose(g_z, 2 * (z - e) / 4)
    np.testing.assert_allclose(g_e, 0.0)


def test_ema_update_formula():
    count = jnp.array([1.0, 2.0, 0.5])
    sums = jnp.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    z = jnp.array([[2.0, 2.0], [4.0, 0.0], [0.0, 6.0]])
    codes = jnp.array([0, 0, 1])
    g = 0.9
    new_count, new_sum, codebook = vqvae.ema_update(count, sums, z, codes, g)
    np.testing.assert_allclose(new_count, [0.9 + 0.1 * 2, 1.8 + 0.1 * 1, 0.45])
    np.testing.assert_allclose(new_sum, [[0.9 + 0.1 * 6, 0.1 * 2], [0.0, 1.8 + 0.1 * 6], [0.9, 0.9]], rtol=1e-6)
    np.testing.assert_allclose(codebook, new_sum / new_count[:, None], rtol=1e-6)


def test_perplexity_and_psnr_closed_forms():
    assert float(vqvae.perplexity(jnp.arange(16) % 8, 8)) == pytest.approx(8.0)
    assert float(vqvae.perplexity(jnp.zeros(10, jnp.int32), 8)) == pytest.approx(1.0)
    assert float(vqvae.psnr(jnp.float32(4e-3))) == pytest.approx(30.0, abs=1e-4)  # 10 log10(4 / 0.004)


def test_space_to_depth_round_trip_and_layout():
    x = jnp.arange(2 * 4 * 4 * 3, dtype=jnp.float32).reshape(2, 4, 4, 3)
    y = vqvae.space_to_depth(x)
    assert y.shape == (2, 2, 2, 12)
    np.testing.assert_array_equal(y[0, 1, 0].reshape(2, 2, 3), x[0, 2:4, 0:2])  # one 2×2 block per cell
    np.testing.assert_array_equal(vqvae.depth_to_space(y), x)


@pytest.mark.parametrize("kind,downsample", [("vq", 4), ("gumbel", 4), ("vq", 2), ("gumbel", 2)])
def test_token_shapes_and_dtypes(kind, downsample):
    c = override(TINY, {"kind": kind, "downsample": downsample})
    model = vqvae.build(c, None, nnx.Rngs(0))
    codes = model.encode(_images())
    grid = 32 // downsample  # one token per downsample × downsample pixels
    assert codes.shape == (4, grid, grid) and codes.dtype == jnp.int32 and model.grid == grid
    assert int(codes.min()) >= 0 and int(codes.max()) < c.codebook_size
    assert model.decode(codes).shape == (4, 32, 32, 3)
    loss, metrics = vqvae.loss_fn(model, {"images": _images()}, jax.random.key(0))
    assert np.isfinite(float(loss)) and {"mse", "psnr", "perplexity", "usage"} <= set(metrics)


def test_vq_loss_value_is_reconstruction_plus_commitment():
    c = override(TINY, {"ema_codebook": False})
    model = vqvae.build(c, None, nnx.Rngs(0))
    x = _images()
    loss, m = vqvae.loss_fn(model, {"images": x}, jax.random.key(0))
    z = model.encoder(x).reshape(-1, c.code_dim)
    e = model.codebook[...][vqvae.nearest_code(z, model.codebook[...])]
    mse = jnp.mean((model.decode(model.encode(x)) - x) ** 2)
    # gradient codebook: |x̂ - x|² + β |z - sg(e)|² + |sg(z) - e|²
    np.testing.assert_allclose(loss, mse + (c.beta + 1) * jnp.mean((z - e) ** 2), rtol=1e-5)
    np.testing.assert_allclose(m["mse"], mse, rtol=1e-5)


def test_ema_state_is_updated_by_the_loss_and_dead_codes_restart():
    c = override(TINY, {"ema_codebook_decay": 0.5, "restart_threshold": 0.01})
    model = vqvae.build(c, None, nnx.Rngs(0))
    dead = jnp.arange(c.codebook_size) % 2 == 0
    model.ema_count[...] = jnp.where(dead, 0.0, 100.0)  # even codes have (and will have) counts < 0.01
    x = _images(B=2)
    z_ND = np.asarray(model.encoder(x).reshape(-1, c.code_dim))
    assigned = np.isin(np.arange(c.codebook_size), vqvae.nearest_code(z_ND, model.codebook[...]))
    restarted = np.flatnonzero(dead & ~assigned)  # dead and still unused this step
    assert len(restarted) > 0
    grad_fn = nnx.value_and_grad(vqvae.loss_fn, argnums=nnx.DiffState(0, nnx.Param), has_aux=True)
    grad_fn(model, {"images": x}, jax.random.key(1))  # mutates the non-Param EMA state in place
    codebook = np.asarray(model.codebook[...])
    count = np.asarray(model.ema_count[...])
    for v in restarted:  # every dead code now sits on an encoder output of the batch, count 1
        assert np.min(np.abs(z_ND - codebook[v]).max(-1)) < 1e-6
        assert count[v] == 1.0
    live = np.flatnonzero(~dead)
    assert np.all(count[live] >= 50.0)  # 0.5 * 100 + 0.5 * (its assignments)


def test_gumbel_softmax_limits():
    logits = jnp.log(jnp.array([[0.6, 0.3, 0.1]]))
    key = jax.random.key(3)
    cold = vqvae.gumbel_softmax(logits, 1e-3, key)
    g = jax.random.gumbel(key, logits.shape)
    np.testing.assert_allclose(cold, jax.nn.one_hot(jnp.argmax(logits + g, -1), 3), atol=1e-6)
    hot = vqvae.gumbel_softmax(logits, 1e4, key)
    np.testing.assert_allclose(hot, jnp.full((1, 3), 1 / 3), atol=1e-3)
    # low temperature: the one-hot samples follow softmax(logits) (Gumbel-max trick)
    keys = jax.random.split(jax.random.key(0), 20_000)
    samples = jax.vmap(lambda k: vqvae.gumbel_softmax(logits, 1e-3, k)[0])(keys)
    np.testing.assert_allclose(samples.mean(0), [0.6, 0.3, 0.1], atol=0.015)


def test_kl_to_uniform_and_temperature_schedule():
    assert float(vqvae.kl_to_uniform(jnp.zeros((3, 8)))) == pytest.approx(0.0, abs=1e-6)
    peaked = jnp.array([[100.0] + [0.0] * 7])
    assert float(vqvae.kl_to_uniform(peaked)) == pytest.approx(np.log(8), rel=1e-4)
    c = override(TINY, {"tau_start": 1.0, "tau_end": 0.0625, "tau_steps": 100})
    assert float(vqvae.gumbel_temperature(0, c)) == pytest.approx(1.0)
    assert float(vqvae.gumbel_temperature(50, c)) == pytest.approx(0.25)  # geometric mean of the ends
    assert float(vqvae.gumbel_temperature(1000, c)) == pytest.approx(0.0625)


def test_gumbel_step_counter_advances():
    c = override(TINY, {"kind": "gumbel"})
    model = vqvae.build(c, None, nnx.Rngs(0))
    grad_fn = nnx.value_and_grad(vqvae.loss_fn, argnums=nnx.DiffState(0, nnx.Param), has_aux=True)
    (_, m), _ = grad_fn(model, {"images": _images(2)}, jax.random.key(0))
    assert int(model.step[...]) == 1 and float(m["tau"]) == pytest.approx(c.tau_start)


def test_downsample_2_encoder_reach_is_two_cells_around_a_changed_2x2_block():
    """With downsample 2 the encoder folds once: changing one 2×2 pixel block changes the code vectors only
    within two cells of that block (two 3×3 convolutions), not across the grid."""
    c = override(TINY, {"downsample": 2, "num_res_blocks": 0})
    model = vqvae.build(c, None, nnx.Rngs(0))
    x = _images()[:1]
    y = x.at[0, 0:2, 0:2].set(1.0)  # the top-left 2×2 block: cell (0, 0)
    changed_hw = np.abs(np.asarray(model.encoder(y) - model.encoder(x)))[0].max(-1) > 0
    assert changed_hw[0, 0] and not changed_hw[3:].any() and not changed_hw[:, 3:].any()


def test_bad_downsample_is_refused():
    with pytest.raises(ValueError, match="downsample must be 2 or 4"):
        override(TINY, {"downsample": 8})
    with pytest.raises(ValueError, match="multiple of downsample"):
        override(TINY, {"image_size": 18, "downsample": 4})


def test_pipeline_validates_input():
    model = vqvae.build(TINY, None, nnx.Rngs(0))
    pipe = vqvae.Pipeline(model, TINY)
    images = np.zeros((2, 32, 32, 3), np.uint8)
    codes = pipe.encode(images)
    assert codes.shape == (2, 8, 8) and pipe.reconstruct(images).dtype == np.uint8
    with pytest.raises(ValueError, match="uint8"):
        pipe.encode(images.astype(np.float32))
    with pytest.raises(ValueError, match="codes must lie"):
        pipe.decode(codes + TINY.codebook_size)


def test_model_init_is_deterministic_and_holds_no_rngs():
    a = nnx.state(vqvae.build(TINY, None, nnx.Rngs(7)))
    b = nnx.state(vqvae.build(TINY, None, nnx.Rngs(7)))
    jax.tree.map(np.testing.assert_array_equal, a, b)
    assert not jax.tree.leaves(nnx.state(vqvae.build(TINY, None, nnx.Rngs(7)), nnx.RngState))
