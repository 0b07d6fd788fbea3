"""Gaussian diffusion maths (Ho et al. 2020; Nichol & Dhariwal 2021; Song et al. 2021), model-agnostic.

Indices run t = 0 .. T-1 in code for the paper's t = 1 .. T, and ᾱ_{-1} = 1 (x_{-1} is the clean image).
    forward     q(x_t | x_0)          = N(√ᾱ_t x_0, (1 - ᾱ_t) I),            ᾱ_t = ∏_{s≤t} (1 - β_s)
    posterior   q(x_{t-1} | x_t, x_0) = N(c0_t x_0 + ct_t x_t, β̃_t I),
                c0_t = √ᾱ_{t-1} β_t / (1 - ᾱ_t),   ct_t = √α_t (1 - ᾱ_{t-1}) / (1 - ᾱ_t),
                β̃_t = β_t (1 - ᾱ_{t-1}) / (1 - ᾱ_t)
    targets     ε, v = √ᾱ_t ε - √(1 - ᾱ_t) x_0 (Salimans & Ho 2022), or x_0 itself (DALL-E 2's prior)
Samplers take `model_fn(x_t, t_B) -> prediction` (ε, v or x_0, by `prediction`) and run as ONE compiled
`lax.scan` over the steps. Shapes: images `x` are (B, H, W, C), or any (B, ...) such as embeddings (B, E);
`t_B` int32 (B,).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

PREDICTIONS = ("eps", "v", "x0")
SCHEDULES = ("linear", "cosine")


class Schedule(NamedTuple):
    """Every coefficient of the forward process and its posterior, each float32 (T,), computed once."""

    betas: jax.Array  # β_t
    alphas: jax.Array  # α_t = 1 - β_t
    alpha_bars: jax.Array  # ᾱ_t
    alpha_bars_prev: jax.Array  # ᾱ_{t-1}, with ᾱ_{-1} = 1
    sqrt_alpha_bars: jax.Array  # √ᾱ_t
    sqrt_one_minus_alpha_bars: jax.Array  # √(1 - ᾱ_t)
    posterior_variance: jax.Array  # β̃_t
    posterior_x0_coef: jax.Array  # c0_t
    posterior_xt_coef: jax.Array  # ct_t

    @property
    def num_steps(self) -> int:
        return self.betas.shape[0]


def linear_betas(num_steps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    """Ho et al.'s β_t, linear from 1e-4 to 0.02 at T = 1000, rescaled by 1000 / T for other T."""
    scale = 1000.0 / num_steps
    if scale * beta_end >= 1:
        raise ValueError(f"the linear schedule needs num_steps > {int(1000 * beta_end)} (β_T < 1), got {num_steps}")
    return np.linspace(scale * beta_start, scale * beta_end, num_steps, dtype=np.float64)


def cosine_alpha_bars(num_steps: int, s: float = 0.008) -> np.ndarray:
    """Nichol & Dhariwal: ᾱ_t = f(t) / f(0), f(t) = cos²(π/2 · (t/T + s) / (1 + s)), for paper t = 1..T."""
    f = lambda t: np.cos((t / num_steps + s) / (1 + s) * np.pi / 2) ** 2  # noqa: E731
    return f(np.arange(1, num_steps + 1, dtype=np.float64)) / f(0.0)


def cosine_betas(num_steps: int, max_beta: float = 0.999) -> np.ndarray:
    """β_t = 1 - ᾱ_t / ᾱ_{t-1} of the cosine schedule, clipped at `max_beta` (so ᾱ_{T} > 0)."""
    alpha_bars = cosine_alpha_bars(num_steps)
    prev = np.concatenate([[1.0], alpha_bars[:-1]])
    return np.clip(1.0 - alpha_bars / prev, 0.0, max_beta)


def make_schedule(kind: str = "cosine", num_steps: int = 1000, snr_scale: float = 1.0) -> Schedule:
    """Precompute the `Schedule` of a named β-schedule (float64 on the host, stored as float32).

    `snr_scale` = s multiplies every step's signal-to-noise ratio, SNR'_t = s · SNR_t (log-SNR shifted by log s;
    Hoogeboom et al. 2023 shift it by resolution): ᾱ'_t = s ᾱ_t / (s ᾱ_t + 1 - ᾱ_t), β'_t = 1 - ᾱ'_t / ᾱ'_{t-1}.
    s > 1 noises less at every t (for small images, whose structure noise destroys sooner)."""
    if kind not in SCHEDULES:
        raise ValueError(f"unknown noise schedule {kind!r}; choose one of {', '.join(SCHEDULES)}")
    if num_steps < 2:
        raise ValueError(f"a diffusion needs at least 2 steps, got num_steps={num_steps}")
    if not snr_scale > 0:
        raise ValueError(f"snr_scale must be > 0, got {snr_scale}")
    betas = linear_betas(num_steps) if kind == "linear" else cosine_betas(num_steps)
    alpha_bars = np.cumprod(1.0 - betas)
    if snr_scale != 1.0:
        alpha_bars = snr_scale * alpha_bars / (snr_scale * alpha_bars + 1.0 - alpha_bars)
    prev = np.concatenate([[1.0], alpha_bars[:-1]])
    betas = 1.0 - alpha_bars / prev
    alphas = 1.0 - betas
    coefs = dict(
        betas=betas, alphas=alphas, alpha_bars=alpha_bars, alpha_bars_prev=prev,
        sqrt_alpha_bars=np.sqrt(alpha_bars), sqrt_one_minus_alpha_bars=np.sqrt(1.0 - alpha_bars),
        posterior_variance=betas * (1.0 - prev) / (1.0 - alpha_bars),  # β̃_t
        posterior_x0_coef=np.sqrt(prev) * betas / (1.0 - alpha_bars),  # c0_t
        posterior_xt_coef=np.sqrt(alphas) * (1.0 - prev) / (1.0 - alpha_bars),  # ct_t
    )
    return Schedule(**{k: jnp.asarray(v, jnp.float32) for k, v in coefs.items()})


def _at(coef_T: jax.Array, t_B: jax.Array, like: jax.Array) -> jax.Array:
    """Gather coef[t] per example and broadcast it over the image axes: (B,) -> (B, 1, 1, 1)."""
    return coef_T[t_B].reshape((-1,) + (1,) * (like.ndim - 1))


def q_sample(sched: Schedule, x0: jax.Array, t_B: jax.Array, noise: jax.Array) -> jax.Array:
    """x_t = √ᾱ_t x_0 + √(1 - ᾱ_t) ε, a draw from q(x_t | x_0)."""
    return _at(sched.sqrt_alpha_bars, t_B, x0) * x0 + _at(sched.sqrt_one_minus_alpha_bars, t_B, x0) * noise


def q_posterior(sched: Schedule, x0: jax.Array, xt: jax.Array, t_B: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean and variance of q(x_{t-1} | x_t, x_0): (c0_t x_0 + ct_t x_t, β̃_t)."""
    mean = _at(sched.posterior_x0_coef, t_B, x0) * x0 + _at(sched.posterior_xt_coef, t_B, x0) * xt
    return mean, _at(sched.posterior_variance, t_B, x0)


def x0_from_eps(sched: Schedule, xt: jax.Array, t_B: jax.Array, eps: jax.Array) -> jax.Array:
    """x_0 = (x_t - √(1 - ᾱ_t) ε) / √ᾱ_t."""
    return (xt - _at(sched.sqrt_one_minus_alpha_bars, t_B, xt) * eps) / _at(sched.sqrt_alpha_bars, t_B, xt)


def eps_from_x0(sched: Schedule, xt: jax.Array, t_B: jax.Array, x0: jax.Array) -> jax.Array:
    """ε = (x_t - √ᾱ_t x_0) / √(1 - ᾱ_t)."""
    return (xt - _at(sched.sqrt_alpha_bars, t_B, xt) * x0) / _at(sched.sqrt_one_minus_alpha_bars, t_B, xt)


def v_target(sched: Schedule, x0: jax.Array, t_B: jax.Array, eps: jax.Array) -> jax.Array:
    """v = √ᾱ_t ε - √(1 - ᾱ_t) x_0."""
    return _at(sched.sqrt_alpha_bars, t_B, x0) * eps - _at(sched.sqrt_one_minus_alpha_bars, t_B, x0) * x0


def eps_x0_from_v(sched: Schedule, xt: jax.Array, t_B: jax.Array, v: jax.Array) -> tuple[jax.Array, jax.Array]:
    """ε = √(1 - ᾱ_t) x_t + √ᾱ_t v and x_0 = √ᾱ_t x_t - √(1 - ᾱ_t) v (since ᾱ + (1 - ᾱ) = 1)."""
    a, s = _at(sched.sqrt_alpha_bars, t_B, xt), _at(sched.sqrt_one_minus_alpha_bars, t_B, xt)
    return s * xt + a * v, a * xt - s * v


def eps_and_x0(sched: Schedule, prediction: str, xt: jax.Array, t_B: jax.Array,
               out: jax.Array, clip: bool) -> tuple[jax.Array, jax.Array]:
    """The model's output (ε, v or x_0) as (ε̂, x̂_0); with `clip`, x̂_0 is clipped to [-1, 1] and ε̂ re-derived."""
    if prediction == "eps":
        eps, x0 = out, x0_from_eps(sched, xt, t_B, out)
    elif prediction == "v":
        eps, x0 = eps_x0_from_v(sched, xt, t_B, out)
    elif prediction == "x0":
        eps, x0 = eps_from_x0(sched, xt, t_B, out), out
    else:
        raise ValueError(f"unknown prediction {prediction!r}; choose one of {', '.join(PREDICTIONS)}")
    if clip:
        x0 = jnp.clip(x0, -1.0, 1.0)
        eps = eps_from_x0(sched, xt, t_B, x0)
    return eps, x0


def training_target(sched: Schedule, prediction: str, x0: jax.Array, t_B: jax.Array,
                    eps: jax.Array) -> jax.Array:
    """What the network regresses: ε itself, v, or x_0."""
    if prediction not in PREDICTIONS:
        raise ValueError(f"unknown prediction {prediction!r}; choose one of {', '.join(PREDICTIONS)}")
    return {"eps": eps, "x0": x0}[prediction] if prediction != "v" else v_target(sched, x0, t_B, eps)


def min_snr_weights(sched: Schedule, prediction: str, t_B: jax.Array, gamma: float) -> jax.Array:
    """Min-SNR-γ loss weights (Hang et al. 2023), SNR_t = ᾱ_t / (1 - ᾱ_t): (B,).

    They make every target weigh like min(SNR_t, γ) · ‖x̂_0 - x_0‖²: min(SNR, γ) / SNR for ε,
    min(SNR, γ) / (SNR + 1) for v, min(SNR, γ) for x_0 (since ‖ε̂ - ε‖² = SNR ‖x̂_0 - x_0‖² and
    ‖v̂ - v‖² = (SNR + 1) ‖x̂_0 - x_0‖²); the easy, almost noiseless steps stop dominating the gradient.
    """
    snr_B = sched.alpha_bars[t_B] / (1.0 - sched.alpha_bars[t_B])
    return jnp.minimum(snr_B, gamma) / {"eps": snr_B, "v": snr_B + 1.0, "x0": 1.0}[prediction]


def simple_loss(sched: Schedule, prediction: str, model_fn: Callable[[jax.Array, jax.Array], jax.Array],
                x0: jax.Array, key: jax.Array, *, min_snr_gamma: float | None = None) -> jax.Array:
    """Ho et al.'s L_simple: E_{t ~ U{0..T-1}, ε ~ N(0, I)} w_t ‖target - f(x_t, t)‖², mean over pixels;
    w_t = 1, or the min-SNR-γ weight with `min_snr_gamma`."""
    t_key, eps_key = jax.random.split(key)
    t_B = jax.random.randint(t_key, (x0.shape[0],), 0, sched.num_steps)
    eps = jax.random.normal(eps_key, x0.shape, x0.dtype)
    xt = q_sample(sched, x0, t_B, eps)
    err_B = jnp.mean((model_fn(xt, t_B) - training_target(sched, prediction, x0, t_B, eps)) ** 2,
                     axis=tuple(range(1, x0.ndim)))
    if min_snr_gamma is not None:
        err_B = err_B * min_snr_weights(sched, prediction, t_B, min_snr_gamma)
    return jnp.mean(err_B)


def guided(model_fn: Callable[..., jax.Array], x: jax.Array, t_B: jax.Array, cond, uncond,
           guidance: jax.Array | float) -> jax.Array:
    """Classifier-free guidance: f̃ = f(x, ∅) + w (f(x, c) - f(x, ∅)); one batched call for both halves.

    w = 0 is the unconditional model, w = 1 the conditional one, w > 1 pushes further towards the text.
    `cond`/`uncond` are pytrees of per-example conditioning with leading axis B.
    """
    both = jax.tree.map(lambda c, u: jnp.concatenate([c, u]), cond, uncond)
    out_c, out_u = jnp.split(model_fn(jnp.concatenate([x, x]), jnp.concatenate([t_B, t_B]), both), 2)
    return out_u + guidance * (out_c - out_u)


def ancestral_sample(sched: Schedule, prediction: str, model_fn: Callable[[jax.Array, jax.Array], jax.Array],
                     x_T: jax.Array, key: jax.Array, *, clip: bool = True,
                     return_trajectory: bool = False) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Ho et al.'s sampler over all T steps: x_{t-1} = μ̃_t(x̂_0, x_t) + √β̃_t z, z ~ N(0, I).

    The noise of step t is `normal(fold_in(key, t))`. Returns x_{-1} (B, H, W, C), and with
    `return_trajectory` also x after every step, (T, B, H, W, C): x_{T-2}, ..., x_{-1}.
    """
    ones_B = jnp.ones((x_T.shape[0],), jnp.int32)

    def step(x, t):
        t_B = t * ones_B
        _, x0 = eps_and_x0(sched, prediction, x, t_B, model_fn(x, t_B), clip)
        mean, var = q_posterior(sched, x0, x, t_B)
        z = jax.random.normal(jax.random.fold_in(key, t), x.shape, x.dtype)
        x = mean + jnp.sqrt(var) * z  # β̃_0 = 0: the last step adds no noise
        return x, x if return_trajectory else None

    x, x_traj = jax.lax.scan(step, x_T, jnp.arange(sched.num_steps - 1, -1, -1))
    return (x, x_traj) if return_trajectory else x


def ddim_timesteps(num_steps: int, steps: int) -> np.ndarray:
    """`steps` evenly spaced timesteps, descending from T-1 to 0: int32 (steps,)."""
    if not 1 <= steps <= num_steps:
        raise ValueError(f"DDIM steps must be in 1..{num_steps} (the schedule's T), got {steps}")
    return np.unique(np.linspace(0, num_steps - 1, steps).round().astype(np.int32))[::-1].copy()


def ddim_sample(sched: Schedule, prediction: str, model_fn: Callable[[jax.Array, jax.Array], jax.Array],
                x_T: jax.Array, key: jax.Array, *, steps: int = 50, eta: float = 0.0, clip: bool = True,
                order: int = 1, return_trajectory: bool = False) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Song et al.'s DDIM over a sub-sequence τ of the timesteps, one step τ_i -> τ_{i-1}:

        x_prev = √ᾱ_prev x̂_0 + √(1 - ᾱ_prev - σ²) ε̂ + σ z,
        σ = η √((1 - ᾱ_prev) / (1 - ᾱ_t)) √(1 - ᾱ_t / ᾱ_prev).
    η = 0 is deterministic; η = 1 with every step is the ancestral sampler. The noise of step t is
    `normal(fold_in(key, t))`, as in `ancestral_sample`; the trajectory holds x after every step.

    `order=2` (η = 0 only) is DPM-Solver++(2M) (Lu et al. 2022). With a_t = √ᾱ_t, s_t = √(1 - ᾱ_t) and
    λ_t = log(a_t / s_t), deterministic DDIM is its first-order step x_prev = (s_prev/s_t) x_t +
    (a_prev - a_t s_prev/s_t) x̂_0; the second order replaces x̂_0 by the linear extrapolation through the
    last two predictions, D = (1 + 1/(2r)) x̂_0 - 1/(2r) x̂_0', r = h'/h, h = λ_prev - λ_t (h' the step
    before). The first step (no x̂_0' yet) and the last (h = ∞, into the clean image) stay first-order.
    """
    if order not in (1, 2):
        raise ValueError(f"order must be 1 (DDIM) or 2 (DPM-Solver++(2M)), got {order}")
    if order == 2 and eta != 0:
        raise ValueError(f"DPM-Solver++(2M) here is deterministic: eta must be 0, got {eta}")
    taus = jnp.asarray(ddim_timesteps(sched.num_steps, steps))
    prevs = jnp.concatenate([taus[1:], jnp.array([-1], jnp.int32)])  # -1: ᾱ_{-1} = 1, the clean image
    ones_B = jnp.ones((x_T.shape[0],), jnp.int32)
    lam = lambda ab: 0.5 * jnp.log(ab / (1 - ab))  # noqa: E731  λ = log(a / s)

    def step(carry, t_prev):
        x, x0_before, h_before = carry
        t, prev = t_prev
        eps, x0 = eps_and_x0(sched, prediction, x, t * ones_B, model_fn(x, t * ones_B), clip)
        ab, ab_prev = sched.alpha_bars[t], jnp.where(prev >= 0, sched.alpha_bars[prev], 1.0)
        if order == 2:
            h = lam(ab_prev) - lam(ab)  # prev = -1: ab_prev = 1, h = inf (that step stays first-order)
            multistep = jnp.isfinite(h_before) & (prev >= 0)
            r = jnp.where(multistep, h_before / jnp.where(multistep, h, 1.0), 1.0)
            x0_used = jnp.where(multistep, (1 + 0.5 / r) * x0 - (0.5 / r) * x0_before, x0)
            eps = eps_from_x0(sched, x, t * ones_B, x0_used)
            x0, x0_before, h_before = x0_used, x0, h
        sigma = eta * jnp.sqrt((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev))
        z = jax.random.normal(jax.random.fold_in(key, t), x.shape, x.dtype)
        direction = jnp.sqrt(jnp.maximum(1 - ab_prev - sigma**2, 0.0)) * eps
        x = jnp.sqrt(ab_prev) * x0 + direction + sigma * z
        return (x, x0_before, h_before), x if return_trajectory else None

    (x, _, _), x_traj = jax.lax.scan(step, (x_T, jnp.zeros_like(x_T), jnp.float32(jnp.inf)), (taus, prevs))
    return (x, x_traj) if return_trajectory else x
