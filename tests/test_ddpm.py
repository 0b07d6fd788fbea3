"""DDPM against closed forms: schedules, forward process, posterior, targets, samplers, guidance; the model."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from minimodal import diffusion, ddpm
from minimodal.tokenizer import Tokenizer

CAPTIONS = ["a red circle", "a small blue square at the top", "a large green cross", "a white triangle"]


# ------------------------------------------------------------------------------------------- schedules

@pytest.mark.parametrize("kind", diffusion.SCHEDULES)
@pytest.mark.parametrize("T", [40, 1000])
def test_alpha_bars_decrease_strictly_inside_zero_one(kind, T):
    s = diffusion.make_schedule(kind, T)
    ab = np.asarray(s.alpha_bars, np.float64)
    assert np.all(np.diff(ab) < 0) and ab[0] < 1 and ab[-1] > 0
    assert np.all((np.asarray(s.betas) > 0) & (np.asarray(s.betas) < 1))
    np.testing.assert_allclose(ab, np.cumprod(1 - np.asarray(s.betas, np.float64)), rtol=1e-4)
    np.testing.assert_allclose(s.alpha_bars_prev[1:], s.alpha_bars[:-1])
    assert s.alpha_bars_prev[0] == 1.0


def test_linear_schedule_is_ho_et_al():
    betas = np.asarray(diffusion.make_schedule("linear", 1000).betas)
    np.testing.assert_allclose([betas[0], betas[-1]], [1e-4, 0.02], rtol=1e-6)
    np.testing.assert_allclose(np.diff(betas), (0.02 - 1e-4) / 999, rtol=1e-3)


def test_cosine_schedule_formula():
    """ᾱ_t = f(t) / f(0), f(t) = cos²(π/2 · (t/T + 0.008) / 1.008), wherever β is not clipped."""
    T = 100
    t = np.arange(1, T + 1)
    f = np.cos((t / T + 0.008) / 1.008 * np.pi / 2) ** 2
    f0 = np.cos(0.008 / 1.008 * np.pi / 2) ** 2
    ab = np.asarray(diffusion.make_schedule("cosine", T).alpha_bars, np.float64)
    np.testing.assert_allclose(ab[:-1], (f / f0)[:-1], rtol=1e-5)  # the last β is clipped at 0.999
    np.testing.assert_allclose(diffusion.make_schedule("cosine", T).betas[-1], 0.999, rtol=1e-6)


@pytest.mark.parametrize("kind", diffusion.SCHEDULES)
@pytest.mark.parametrize("scale", [0.25, 4.0])
def test_snr_scale_multiplies_every_steps_snr(kind, scale):
    """SNR'_t = s · SNR_t, SNR = ᾱ / (1 - ᾱ); the shifted schedule is still a schedule (β in (0, 1))."""
    snr = lambda sched: np.asarray(sched.alpha_bars, np.float64) / (1 - np.asarray(sched.alpha_bars, np.float64))  # noqa: E731
    base, shifted = diffusion.make_schedule(kind, 200), diffusion.make_schedule(kind, 200, snr_scale=scale)
    np.testing.assert_allclose(snr(shifted), scale * snr(base), rtol=1e-3)
    assert np.all((np.asarray(shifted.betas) > 0) & (np.asarray(shifted.betas) < 1))
    np.testing.assert_allclose(shifted.alpha_bars, np.cumprod(1 - np.asarray(shifted.betas, np.float64)), rtol=1e-4)


def test_bad_schedules_are_refused():
    with pytest.raises(ValueError, match="unknown noise schedule"):
        diffusion.make_schedule("quadratic", 10)
    with pytest.raises(ValueError, match="at least 2"):
        diffusion.make_schedule("cosine", 1)
    with pytest.raises(ValueError, match="β_T < 1"):
        diffusion.make_schedule("linear", 10)
    with pytest.raises(ValueError, match="snr_scale must be > 0"):
        diffusion.make_schedule("cosine", 10, snr_scale=0.0)


# ----------------------------------------------------------------------------- forward and posterior

def test_q_sample_mean_and_variance_by_monte_carlo():
    s = diffusion.make_schedule("cosine", 50)
    n, x0 = 200_000, 0.6
    t_B = jnp.full((n,), 20)
    noise = jax.random.normal(jax.random.key(0), (n, 1, 1, 1))
    xt = np.asarray(diffusion.q_sample(s, jnp.full((n, 1, 1, 1), x0), t_B, noise)).ravel()
    ab = float(s.alpha_bars[20])
    # q(x_t | x_0) = N(√ᾱ x_0, (1 - ᾱ) I); standard errors ≈ 0.002 for the mean, 0.003·var for the variance
    np.testing.assert_allclose(xt.mean(), np.sqrt(ab) * x0, atol=0.01)
    np.testing.assert_allclose(xt.var(), 1 - ab, rtol=0.02)


def test_posterior_is_bayes_rule_for_gaussians():
    """q(x_{t-1}|x_t,x_0) ∝ N(x_t; √α_t x_{t-1}, β_t) N(x_{t-1}; √ᾱ_{t-1} x_0, 1-ᾱ_{t-1}): a product of Gaussians."""
    s = diffusion.make_schedule("linear", 100)
    t = np.arange(1, 100)
    a, b = np.asarray(s.alphas, np.float64)[t], np.asarray(s.betas, np.float64)[t]
    ab_prev = np.asarray(s.alpha_bars, np.float64)[t - 1]
    precision = 1 / (1 - ab_prev) + a / b  # 1/var = 1/prior var + √α²/β
    x0, xt = 0.3, -1.2
    mean = (np.sqrt(ab_prev) * x0 / (1 - ab_prev) + np.sqrt(a) * xt / b) / precision
    got_mean, got_var = diffusion.q_posterior(s, jnp.full((99, 1, 1, 1), x0), jnp.full((99, 1, 1, 1), xt),
                                              jnp.asarray(t))
    np.testing.assert_allclose(np.ravel(got_var), 1 / precision, rtol=1e-4)
    np.testing.assert_allclose(np.ravel(got_mean), mean, rtol=1e-4, atol=1e-6)
    assert s.posterior_variance[0] == 0 and s.posterior_xt_coef[0] == 0  # t = 0 returns x̂_0 exactly


def test_eps_x0_v_round_trip():
    s = diffusion.make_schedule("cosine", 100)
    k0, k1, k2 = jax.random.split(jax.random.key(0), 3)
    x0 = jax.random.uniform(k0, (8, 4, 4, 3), minval=-1, maxval=1)
    eps = jax.random.normal(k1, x0.shape)
    t_B = jax.random.randint(k2, (8,), 0, 100)
    xt = diffusion.q_sample(s, x0, t_B, eps)
    np.testing.assert_allclose(diffusion.x0_from_eps(s, xt, t_B, eps), x0, atol=2e-3)  # 1/√ᾱ grows at t → T
    np.testing.assert_allclose(diffusion.eps_from_x0(s, xt, t_B, x0), eps, atol=1e-4)
    v = diffusion.v_target(s, x0, t_B, eps)
    eps_v, x0_v = diffusion.eps_x0_from_v(s, xt, t_B, v)
    np.testing.assert_allclose(eps_v, eps, atol=1e-5)
    np.testing.assert_allclose(x0_v, x0, atol=1e-5)
    for prediction, out in (("eps", eps), ("v", v), ("x0", x0)):
        e, x = diffusion.eps_and_x0(s, prediction, xt, t_B, out, clip=False)
        np.testing.assert_allclose(e, eps, atol=1e-4)
        np.testing.assert_allclose(x, x0, atol=2e-3)


# ------------------------------------------------------------------------------------------ samplers

POINT = jnp.array([0.5, -0.25, 1.0, -1.0]).reshape(1, 2, 2, 1)  # a one-point data set, inside [-1, 1]


def oracle(s: diffusion.Schedule, prediction: str):
    """The perfect denoiser of the one-point data set: ε*(x_t, t) = (x_t - √ᾱ_t x*) / √(1 - ᾱ_t), v* or x*."""
    def model_fn(xt, t_B):
        x0 = jnp.broadcast_to(POINT, xt.shape)
        return diffusion.training_target(s, prediction, x0, t_B, diffusion.eps_from_x0(s, xt, t_B, x0))
    return model_fn


@pytest.mark.parametrize("prediction", diffusion.PREDICTIONS)
@pytest.mark.parametrize("kind", diffusion.SCHEDULES)
def test_oracle_samplers_return_the_data_point(prediction, kind):
    s = diffusion.make_schedule(kind, 40)
    x_T = jax.random.normal(jax.random.key(0), (3, 2, 2, 1))
    model_fn = oracle(s, prediction)
    for x in (diffusion.ancestral_sample(s, prediction, model_fn, x_T, jax.random.key(1)),
              diffusion.ddim_sample(s, prediction, model_fn, x_T, jax.random.key(1), steps=7),
              diffusion.ddim_sample(s, prediction, model_fn, x_T, jax.random.key(1), steps=7, order=2),
              diffusion.ddim_sample(s, prediction, model_fn, x_T, jax.random.key(1), steps=40, eta=1.0)):
        np.testing.assert_allclose(x, jnp.broadcast_to(POINT, x.shape), atol=1e-4)


def test_oracle_loss_is_zero():
    s = diffusion.make_schedule("cosine", 40)
    for prediction in diffusion.PREDICTIONS:
        loss = diffusion.simple_loss(s, prediction, oracle(s, prediction), jnp.tile(POINT, (16, 1, 1, 1)),
                                     jax.random.key(0))
        assert float(loss) < 1e-8


@pytest.mark.parametrize("prediction", diffusion.PREDICTIONS)
def test_min_snr_weight_is_min_snr_gamma_times_the_x0_error(prediction):
    """w_t ‖f - target‖² = min(SNR_t, γ) ‖x̂_0 - x_0‖² for either target (the weight's definition)."""
    s, gamma = diffusion.make_schedule("cosine", 50), 5.0
    k0, k1, k2 = jax.random.split(jax.random.key(0), 3)
    t_B = jnp.arange(0, 50, 7)
    x0 = jax.random.uniform(k0, (len(t_B), 4, 4, 3), minval=-1, maxval=1)
    eps = jax.random.normal(k1, x0.shape)
    xt = diffusion.q_sample(s, x0, t_B, eps)
    out = diffusion.training_target(s, prediction, x0, t_B, eps) + 0.1 * jax.random.normal(k2, x0.shape)
    _, x0_hat = diffusion.eps_and_x0(s, prediction, xt, t_B, out, clip=False)
    target = diffusion.training_target(s, prediction, x0, t_B, eps)
    weighted_B = diffusion.min_snr_weights(s, prediction, t_B, gamma) * jnp.mean((out - target) ** 2, (1, 2, 3))
    snr_B = s.alpha_bars[t_B] / (1 - s.alpha_bars[t_B])
    np.testing.assert_allclose(weighted_B, jnp.minimum(snr_B, gamma) * jnp.mean((x0_hat - x0) ** 2, (1, 2, 3)),
                               rtol=2e-3)
    assert float(snr_B[0]) > gamma > float(snr_B[-1])  # both branches of the min are exercised


def test_min_snr_loss_with_infinite_gamma_is_the_simple_eps_loss():
    s, x0 = diffusion.make_schedule("cosine", 40), jnp.tile(POINT, (8, 1, 1, 1))
    plain = diffusion.simple_loss(s, "eps", toy_model, x0, jax.random.key(0))
    np.testing.assert_allclose(diffusion.simple_loss(s, "eps", toy_model, x0, jax.random.key(0), min_snr_gamma=1e30),
                               plain, rtol=1e-6)
    assert not np.isclose(diffusion.simple_loss(s, "eps", toy_model, x0, jax.random.key(0), min_snr_gamma=1.0),
                          plain, rtol=1e-3)


def toy_model(xt, t_B):
    """A fixed, non-trivial 'network': ε̂ = tanh(x_t) · (1 + t / 100)."""
    return jnp.tanh(xt) * (1 + t_B[:, None, None, None] / 100)


@pytest.mark.parametrize("prediction", diffusion.PREDICTIONS)
def test_ddim_with_eta_one_and_all_steps_is_the_ancestral_sampler(prediction):
    """σ_t(η=1)² = β̃_t and its mean equals μ̃_t(x̂_0, x_t): same key, same noise -> same samples."""
    s = diffusion.make_schedule("linear", 30)
    x_T = jax.random.normal(jax.random.key(0), (4, 3, 3, 2))
    a, traj_a = diffusion.ancestral_sample(s, prediction, toy_model, x_T, jax.random.key(5), clip=False,
                                           return_trajectory=True)
    d, traj_d = diffusion.ddim_sample(s, prediction, toy_model, x_T, jax.random.key(5), steps=30, eta=1.0,
                                      clip=False, return_trajectory=True)
    assert traj_a.shape == traj_d.shape == (30, 4, 3, 3, 2)
    np.testing.assert_allclose(traj_d, traj_a, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(d, a, rtol=1e-4, atol=1e-4)
    d0 = diffusion.ddim_sample(s, prediction, toy_model, x_T, jax.random.key(5), steps=30, eta=0.0, clip=False)
    assert not np.allclose(d0, a, atol=1e-2)  # η = 0 is a different (deterministic) sampler


def test_dpm_solver_2m_is_second_order_on_gaussian_data():
    """Data N(μ, s²): the exact denoiser is x̂_0 = μ + a s² / (a² s² + σ²) (x_t - a μ) (a = √ᾱ, σ = √(1-ᾱ)) and
    the probability-flow ODE keeps u = (x_t - a μ) / √(a² s² + σ²) fixed, so x_T lands on μ + s u. Doubling
    the steps halves DDIM's error (first order) and quarters DPM-Solver++(2M)'s (second order)."""
    s, mu, sd = diffusion.make_schedule("cosine", 500), 0.3, 0.5

    def denoiser(xt, t_B):
        a, sigma = (c[t_B][:, None, None, None] for c in (s.sqrt_alpha_bars, s.sqrt_one_minus_alpha_bars))
        return mu + a * sd**2 / (a**2 * sd**2 + sigma**2) * (xt - a * mu)

    x_T = jax.random.normal(jax.random.key(0), (64, 2, 2, 1))
    a_T, sigma_T = s.sqrt_alpha_bars[-1], s.sqrt_one_minus_alpha_bars[-1]
    exact = mu + sd * (x_T - a_T * mu) / jnp.sqrt(a_T**2 * sd**2 + sigma_T**2)
    error = {(order, n): float(jnp.max(jnp.abs(exact - diffusion.ddim_sample(
        s, "x0", denoiser, x_T, jax.random.key(1), steps=n, order=order, clip=False)))) for order in (1, 2)
        for n in (40, 80)}
    assert 1.7 < error[1, 40] / error[1, 80] < 2.3
    assert error[2, 40] / error[2, 80] > 3.3
    assert error[2, 80] < error[1, 80] / 3


def test_dpm_solver_2m_follows_lu_et_al_step_by_step():
    """Against the paper's update written out in numpy (Lu et al. 2022, Algorithm 2, data prediction):
    x_i = (σ_i / σ_{i-1}) x_{i-1} - α_i (e^{-h_i} - 1) D_i, D_i = (1 + 1/(2 r_i)) x̂_0,i-1 - 1/(2 r_i) x̂_0,i-2,
    r_i = h_{i-1} / h_i, first-order (D = x̂_0) on the first step and into the clean image (α = 1, σ = 0)."""
    s = diffusion.make_schedule("cosine", 100)
    x_T = jax.random.normal(jax.random.key(0), (2, 3, 3, 1))
    taus = diffusion.ddim_timesteps(100, 6)  # uneven steps in λ: r far from 1
    alpha = np.sqrt(np.asarray(s.alpha_bars, np.float64))
    sigma = np.sqrt(1 - np.asarray(s.alpha_bars, np.float64))
    lam = np.log(alpha / sigma)
    x, previous, h_previous = np.asarray(x_T, np.float64), None, None
    for i, t in enumerate(taus):
        x0 = np.asarray(diffusion.x0_from_eps(s, jnp.asarray(x, jnp.float32), jnp.full((2,), t),
                                              toy_model(jnp.asarray(x, jnp.float32), jnp.full((2,), t))), np.float64)
        if i == len(taus) - 1:
            x = x0  # into the clean image
            break
        prev = taus[i + 1]
        h = lam[prev] - lam[t]
        D = x0 if previous is None else x0 + (x0 - previous) / (2 * h_previous / h)
        x = sigma[prev] / sigma[t] * x - alpha[prev] * np.expm1(-h) * D
        previous, h_previous = x0, h
    ours = diffusion.ddim_sample(s, "eps", toy_model, x_T, jax.random.key(1), steps=6, order=2, clip=False)
    np.testing.assert_allclose(ours, x, rtol=1e-3, atol=1e-4)
    ddim = diffusion.ddim_sample(s, "eps", toy_model, x_T, jax.random.key(1), steps=6, clip=False)
    assert not np.allclose(ddim, x, atol=1e-2)  # the second-order term matters here


def test_dpm_solver_options_are_checked():
    s, x_T = diffusion.make_schedule("cosine", 20), jnp.zeros((1, 2, 2, 1))
    with pytest.raises(ValueError, match="order must be 1"):
        diffusion.ddim_sample(s, "eps", toy_model, x_T, jax.random.key(0), steps=5, order=3)
    with pytest.raises(ValueError, match="eta must be 0"):
        diffusion.ddim_sample(s, "eps", toy_model, x_T, jax.random.key(0), steps=5, order=2, eta=0.5)


def test_one_ddim_step_with_eta_one_has_the_posterior_mean_and_variance():
    s = diffusion.make_schedule("cosine", 20)
    t = np.arange(1, 20)
    ab, ab_prev = np.asarray(s.alpha_bars, np.float64)[t], np.asarray(s.alpha_bars_prev, np.float64)[t]
    sigma2 = (1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)  # DDIM's σ_t² at η = 1
    np.testing.assert_allclose(sigma2, np.asarray(s.posterior_variance, np.float64)[t], rtol=1e-4)
    x0, xt = 0.4, 0.9
    eps = (xt - np.sqrt(ab) * x0) / np.sqrt(1 - ab)
    ddim_mean = np.sqrt(ab_prev) * x0 + np.sqrt(1 - ab_prev - sigma2) * eps
    mean, _ = diffusion.q_posterior(s, jnp.full((19, 1, 1, 1), x0), jnp.full((19, 1, 1, 1), xt), jnp.asarray(t))
    np.testing.assert_allclose(np.ravel(mean), ddim_mean, rtol=1e-4, atol=1e-6)


def test_samplers_are_one_compiled_loop():
    """The traced program does not grow with the number of steps: no Python loop over them."""
    s = diffusion.make_schedule("cosine", 200)
    x_T = jnp.zeros((1, 2, 2, 1))

    def size(fn):
        jaxpr = jax.make_jaxpr(fn)(x_T)
        assert any(e.primitive.name == "scan" for e in jaxpr.jaxpr.eqns)
        return len(jaxpr.jaxpr.eqns)

    ddim = lambda n: lambda x: diffusion.ddim_sample(s, "eps", toy_model, x, jax.random.key(0), steps=n)  # noqa
    assert size(ddim(5)) == size(ddim(100))
    dpm = lambda n: lambda x: diffusion.ddim_sample(s, "eps", toy_model, x, jax.random.key(0), steps=n, order=2)  # noqa
    assert size(dpm(5)) == size(dpm(100))
    ancestral = diffusion.ancestral_sample
    assert size(lambda x: ancestral(s, "eps", toy_model, x, jax.random.key(0))) == size(
        lambda x: ancestral(diffusion.make_schedule("cosine", 20), "eps", toy_model, x, jax.random.key(0)))


def test_ddim_timesteps():
    taus = diffusion.ddim_timesteps(1000, 50)
    assert len(taus) == 50 and taus[0] == 999 and taus[-1] == 0 and np.all(np.diff(taus) < 0)
    np.testing.assert_array_equal(diffusion.ddim_timesteps(10, 10), np.arange(9, -1, -1))
    with pytest.raises(ValueError, match="DDIM steps"):
        diffusion.ddim_timesteps(10, 11)


def test_guidance_reduces_to_unconditional_and_conditional():
    def model_fn(x, t_B, c_B):
        return x * c_B[:, None, None, None] + t_B[:, None, None, None]

    x = jax.random.normal(jax.random.key(0), (3, 2, 2, 1))
    t, c, u = jnp.array([1, 2, 3]), jnp.array([2.0, 3.0, 4.0]), jnp.zeros(3)
    np.testing.assert_allclose(diffusion.guided(model_fn, x, t, c, u, 0.0), model_fn(x, t, u), atol=1e-6)
    np.testing.assert_allclose(diffusion.guided(model_fn, x, t, c, u, 1.0), model_fn(x, t, c), atol=1e-6)
    w = 3.0  # f̃ = f_∅ + w (f_c - f_∅)
    np.testing.assert_allclose(diffusion.guided(model_fn, x, t, c, u, w),
                               model_fn(x, t, u) + w * (model_fn(x, t, c) - model_fn(x, t, u)), atol=1e-5)


# --------------------------------------------------------------------------------------------- model

call = nnx.jit(lambda model, *args: model(*args))  # one compiled program, not hundreds of eager ops
loss = nnx.jit(ddpm.loss_fn)

@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.train(CAPTIONS * 4, 280)


@pytest.fixture(scope="module")
def tiny(tokenizer):
    config = ddpm.PRESETS["tiny"]
    model = ddpm.build(config, tokenizer, nnx.Rngs(0))
    # a trained model is not zero: perturb every parameter so all paths carry signal
    params = nnx.state(model, nnx.Param)
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(3), len(leaves))
    nnx.update(model, jax.tree.unflatten(treedef, [p + 0.05 * jax.random.normal(k, p.shape)
                                                  for p, k in zip(leaves, keys)]))
    return model


def _batch(tokenizer, config, n=4):
    return {"images": jax.random.uniform(jax.random.key(0), (n, config.image_size, config.image_size, 3),
                                         minval=-1, maxval=1),
            "tokens": jnp.asarray(tokenizer.encode_batch(CAPTIONS[:n], config.context_length))}


def test_null_tokens_are_the_empty_caption(tokenizer):
    np.testing.assert_array_equal(ddpm.null_tokens(2, 6), tokenizer.encode_batch(["", ""], 6))


def test_caption_dropout_replaces_the_caption_by_the_empty_one(tokenizer, tiny):
    """With cond_drop = 1 the loss of any captions equals the loss with the empty caption (same key)."""
    config = tiny.config
    dropped = nnx.clone(tiny)
    dropped.config = dataclasses.replace(config, cond_drop=1.0)
    batch = _batch(tokenizer, config)
    empty = dict(batch, tokens=jnp.asarray(ddpm.null_tokens(4, config.context_length)))
    key = jax.random.key(1)
    np.testing.assert_allclose(loss(dropped, batch, key)[0], loss(dropped, empty, key)[0], rtol=1e-6)
    assert not np.allclose(loss(tiny, batch, key)[0], loss(tiny, empty, key)[0], rtol=1e-4)


def test_text_and_time_change_the_prediction(tiny, tokenizer):
    config = tiny.config
    x = jax.random.normal(jax.random.key(0), (2, config.image_size, config.image_size, 3))
    t = jnp.array([3, 30])
    tok = jnp.asarray(tokenizer.encode_batch(CAPTIONS[:2], config.context_length))
    other = jnp.asarray(tokenizer.encode_batch(CAPTIONS[2:], config.context_length))
    out = call(tiny, x, t, tok)
    assert not np.allclose(out, call(tiny, x, t, other), atol=1e-4)
    assert not np.allclose(out, call(tiny, x, t + 1, tok), atol=1e-4)


def test_generate_is_deterministic_uint8_and_traces_the_film(tiny, tokenizer):
    pipe = ddpm.pipeline(tiny, tiny.config, tokenizer)
    prompts = CAPTIONS[:3]
    a = pipe.generate(prompts, seed=0, steps=4, guidance=2.0)
    assert a.dtype == np.uint8 and a.shape == (3, 16, 16, 3)
    np.testing.assert_array_equal(a, pipe.generate(prompts, seed=0, steps=4, guidance=2.0))
    assert not np.array_equal(a, pipe.generate(prompts, seed=1, steps=4, guidance=2.0))
    assert tiny.config.sampler == "dpm++2m"  # the default
    ddim = pipe.generate(prompts, seed=0, steps=4, guidance=2.0, sampler="ddim")
    np.testing.assert_array_equal(ddim, pipe.generate(prompts, seed=0, steps=4, guidance=2.0, sampler="ddim"))
    assert not np.array_equal(ddim, a)  # the same x_T, another solver
    with pytest.raises(ValueError, match="DDIM option"):
        pipe.generate(prompts, seed=0, steps=4, eta=0.5)
    images, film = pipe.generate(prompts[:1], seed=0, sampler="ancestral", return_trajectory=True)
    assert film.shape == (tiny.config.diffusion_steps, 1, 16, 16, 3) and np.array_equal(film[-1], images)
    with pytest.raises(TypeError, match="list of str"):
        pipe.generate("a red circle")
    with pytest.raises(ValueError, match="sampler"):
        pipe.generate(prompts, sampler="euler")


def test_sample_in_chunks_equals_one_chunk_per_prompt_set(tiny, tokenizer):
    """Chunking pads the last chunk; each chunk's images do not depend on the padding."""
    x5 = ddpm.sample(tiny, tokenizer, CAPTIONS + CAPTIONS[:1], jax.random.key(0), steps=3, chunk=4)
    assert x5.shape == (5, 16, 16, 3)
    first = ddpm.sample(tiny, tokenizer, CAPTIONS, jax.random.key(0), steps=3, chunk=4)
    np.testing.assert_allclose(x5[:4], first, atol=1e-5)


def test_unconditional_model_trains_and_samples(tokenizer):
    config = dataclasses.replace(ddpm.PRESETS["tiny"], conditional=False, data="digits", min_snr_gamma=0.0)
    model = ddpm.build(config, tokenizer, nnx.Rngs(0))
    assert model.text is None
    value, _ = loss(model, _batch(tokenizer, config), jax.random.key(0))
    assert np.isfinite(value) and value > 0.5  # an untrained network predicts 0: loss ≈ E ε² = 1
    assert ddpm.sample_grid(model, config, tokenizer, jax.random.key(0)).shape == (12, 16, 16, 3)
    with pytest.raises(ValueError, match="count"):
        ddpm.sample(ddpm.build(ddpm.PRESETS["tiny"], tokenizer, nnx.Rngs(0)), tokenizer, 3, jax.random.key(0))


def test_bad_configs_are_refused(tokenizer):
    for bad, match in ((dict(prediction="x_0"), "prediction"), (dict(cond_drop=1.5), "probability"),
                       (dict(min_snr_gamma=-1.0), "min_snr_gamma"),
                       (dict(image_size=17), "divide")):
        with pytest.raises(ValueError, match=match):
            ddpm.build(dataclasses.replace(ddpm.PRESETS["tiny"], **bad), tokenizer, nnx.Rngs(0))


def test_presets_and_parameter_counts(tokenizer):
    default = ddpm.PRESETS["default"]
    assert (default.text_from_clip, default.freeze_text, default.clip_preset) == ("auto", True, "fast")
    assert default.sample_steps == 20  # sizes are named right more often than with 10 (bench/results/ddpm.md)
    assert ddpm.PRESETS["fast"] == dataclasses.replace(default, steps=1700, eval_prompts=60, sample_steps=10)
    assert ddpm.PRESETS["scratch"] == dataclasses.replace(ddpm.Config(), micro_batches=4)  # the 2026-12-04 default
    assert set(ddpm.PRESETS) >= {"default", "tiny", "tour", "fast", "scratch", "gpu"}

    def count(name):
        abstract = nnx.eval_shape(lambda: ddpm.build(ddpm.PRESETS[name], tokenizer, nnx.Rngs(0)))
        return sum(p.size for p in jax.tree.leaves(nnx.state(abstract, nnx.Param)))

    assert count("tiny") == 206_723  # with this 280-id vocabulary
    assert count("scratch") == 951_107
    assert count("default") == 991_427  # the text encoder (CLIP's, frozen) included


def test_evaluate_grades_every_setting_and_saves_what_it_graded(tiny, tokenizer, tmp_path):
    config = dataclasses.replace(tiny.config, eval_prompts=4)
    results = ddpm.evaluate(tiny, config, tokenizer, tmp_path)
    settings = ["fidelity_ancestral_w3", "fidelity_dpm++2m5_w1", "fidelity_dpm++2m5_w3",
                "fidelity_holdout_dpm++2m5_w3"]
    typed = ["fidelity_typed", "size_typed", "fidelity_typed_holdout"]  # prompts as people type them, + per shape
    per_shape = [f"fidelity_typed_{s}" for s in ("circle", "square", "triangle", "cross")]
    assert set(settings + typed) <= set(results) <= set(settings + typed + per_shape)
    assert all(0.0 <= v <= 1.0 for k, v in results.items() if not (k == "size_typed" and np.isnan(v)))
    assert sorted(p.stem for p in (tmp_path / "eval").glob("*.png")) == sorted(settings)
    assert ddpm.evaluate(tiny, dataclasses.replace(config, data="digits"), tokenizer) == {}


def test_a_finished_run_samples_with_the_sampling_settings_it_is_given(tmp_path):
    """Re-running `fit` on a finished run loads it; sampling keys (not saved weights) follow the caller."""
    from minimodal import train

    config = dataclasses.replace(ddpm.PRESETS["tiny"], steps=2, n_train=32, checkpoint_every=2)
    train.fit(ddpm.FAMILY, config, tmp_path, progress=False)
    again = train.fit(ddpm.FAMILY, dataclasses.replace(config, sampler="ddim", sample_steps=3), tmp_path,
                      progress=False)
    assert (again.model.config.sampler, again.model.config.sample_steps) == ("ddim", 3)
    assert json.loads((tmp_path / "config.json").read_text())["sampler"] == "dpm++2m"  # the record is kept


def test_warm_start_copies_a_trained_clips_text_encoder(tokenizer, tmp_path):
    from minimodal import clip, train

    clip_config = dataclasses.replace(clip.PRESETS["tiny"], steps=2, n_train=64, checkpoint_every=2)
    trained = train.fit(clip.FAMILY, clip_config, tmp_path / "clip", progress=False)
    config = dataclasses.replace(ddpm.PRESETS["tiny"], text_from_clip=str(tmp_path / "clip"),
                                 context_length=clip_config.context_length, text_dim=clip_config.text_width,
                                 text_depth=clip_config.text_depth, text_heads=clip_config.text_heads)
    model = ddpm.build(config, trained.tokenizer, nnx.Rngs(0))
    ddpm.warm_start(model, config, trained.tokenizer, tmp_path / "ddpm")
    theirs = jax.tree.leaves(nnx.state(trained.model.text_encoder))
    for ours, their in zip(jax.tree.leaves(nnx.state(model.text)), theirs, strict=True):
        np.testing.assert_array_equal(ours, their)
    with pytest.raises(ValueError, match="text_dim=32"):
        ddpm.warm_start(model, dataclasses.replace(config, text_dim=16), trained.tokenizer, tmp_path)
    with pytest.raises(ValueError, match="another tokenizer"):
        ddpm.warm_start(model, config, tokenizer, tmp_path)
    with pytest.raises(FileNotFoundError, match="not a minimodal work directory"):
        ddpm.warm_start(model, dataclasses.replace(config, text_from_clip=str(tmp_path)), trained.tokenizer, tmp_path)


def test_text_from_clip_auto_trains_a_clip_first_then_reads_through_it_frozen(tmp_path, capsys):
    """text_from_clip=auto: CLIP's `clip_preset` is trained on the DDPM's data in WORKDIR/clip (text encoder sized
    as the DDPM's), its tokenizer is the DDPM's, its text encoder is copied in and kept; a longer run resumes
    without training the CLIP again."""
    from minimodal import train

    config = dataclasses.replace(ddpm.PRESETS["tiny"], steps=2, n_train=64, checkpoint_every=2, lr=1e-2,
                                 text_from_clip="auto", freeze_text=True, clip_preset="tiny")
    trained = train.fit(ddpm.FAMILY, config, tmp_path, progress=False)
    assert "training CLIP's 'tiny' preset in" in capsys.readouterr().err
    clip_family, clip_model, clip_config, clip_tokenizer = train.load_model(tmp_path / "clip")
    assert clip_family.name == "clip" and (clip_config.n_train, clip_config.text_width) == (64, config.text_dim)
    assert trained.tokenizer.merges == clip_tokenizer.merges
    for ours, theirs in zip(jax.tree.leaves(nnx.state(trained.model.text)),
                            jax.tree.leaves(nnx.state(clip_model.text_encoder)), strict=True):
        np.testing.assert_array_equal(ours, theirs)
    longer = train.fit(ddpm.FAMILY, dataclasses.replace(config, steps=4, checkpoint_every=4), tmp_path,
                       progress=False)
    assert "training CLIP" not in capsys.readouterr().err and longer.step == 4
    with pytest.raises(ValueError, match="clip_preset='huge'"):
        ddpm.check_config(dataclasses.replace(config, clip_preset="huge"))
    ddpm.check_config(dataclasses.replace(config, conditional=False))  # nothing to read text with: nothing frozen


def test_freeze_text_trains_the_unet_around_clips_text_encoder_left_as_it_was(tmp_path):
    """freeze_text: the text encoder's Params sit in the state's rest (no gradient, optimiser, decay or EMA), so
    after training and after loading they are CLIP's bit for bit, while the U-Net has moved."""
    from minimodal import clip, train

    clip_config = dataclasses.replace(clip.PRESETS["tiny"], steps=2, n_train=64, checkpoint_every=2)
    their_text = train.fit(clip.FAMILY, clip_config, tmp_path / "clip", progress=False).model.text_encoder
    config = dataclasses.replace(ddpm.PRESETS["tiny"], steps=3, n_train=64, checkpoint_every=3, lr=1e-2,
                                 text_from_clip=str(tmp_path / "clip"), freeze_text=True,
                                 context_length=clip_config.context_length, text_dim=clip_config.text_width,
                                 text_depth=clip_config.text_depth, text_heads=clip_config.text_heads)
    trained = train.fit(ddpm.FAMILY, config, tmp_path / "ddpm", progress=False)
    _, loaded, _, _ = train.load_model(tmp_path / "ddpm")
    for model in (trained.model, loaded):
        for ours, theirs in zip(jax.tree.leaves(nnx.state(model.text)), jax.tree.leaves(nnx.state(their_text)),
                                strict=True):
            np.testing.assert_array_equal(ours, theirs)
    fresh = train.build_model(ddpm.FAMILY, config, trained.tokenizer, config.seed)
    assert not np.array_equal(loaded.unet.stem.kernel[...], fresh.unet.stem.kernel[...])
    with pytest.raises(ValueError, match="text_from_clip"):
        ddpm.check_config(dataclasses.replace(config, text_from_clip=""))
