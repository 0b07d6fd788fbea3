"""Image tokenizers: pictures -> a grid of codebook indices -> pictures.

Legend: B batch, H W pixels, h w token grid, C channels, D code width, V codebook size.

Two tokenizers behind one interface, `encode(images) -> int32 (B, h, w)` and `decode(tokens) -> images`:

* `VQVAE` (van den Oord et al. 2017): a conv encoder gives z_e (B, h, w, D); each vector is replaced by
  its nearest code, k = argmin_v |z_e - e_v|²; the decoder draws the image from z_q = e_k. The argmin has
  no gradient, so the straight-through estimator copies dL/dz_q onto z_e:  z_q = z_e + sg(e_k - z_e).
  Loss = |x̂ - x|² + β |z_e - sg(e_k)|²  (+ |sg(z_e) - e_k|² when the codebook learns by gradient).
  With `ema_codebook` the codebook instead follows running means of the vectors assigned to each code
  (non-Param `nnx.Variable` state the loss updates):  n_v <- γ n_v + (1-γ) #{k = v},
  m_v <- γ m_v + (1-γ) Σ_{k=v} z_e,  e_v = m_v / n_v;  a code whose count n_v falls below
  `restart_threshold` is dead and restarts on a random encoder output of the batch.
* `GumbelVAE` (DALL-E's dVAE, Ramesh et al. 2021): the encoder gives logits over V codes per cell;
  training decodes the relaxed one-hot y = softmax((logits + g) / τ), g ~ Gumbel(0, 1), with τ annealed
  from `tau_start` to `tau_end`, plus β_KL · KL(q(k|x) ‖ uniform) = β_KL Σ_v q_v log(V q_v);
  encoding takes the argmax.

A 32 px image becomes an 8 × 8 grid: two space-to-depth steps of 2 (fewer, larger matmuls than strided
convs on the CPU), and two depth-to-space steps back.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from minimodal.config import TrainConfig
from minimodal.data import denormalize_images, load_examples, normalize_images
from minimodal.train import Family


@dataclasses.dataclass(frozen=True)
class Config(TrainConfig):
    """Image tokenizer config; `kind` picks the VQ-VAE ("vq") or the Gumbel-softmax dVAE ("gumbel")."""

    kind: str = "vq"
    codebook_size: int = 512  # V
    code_dim: int = 32  # D
    width: int = 64  # channels at the token grid
    hidden: int = 32  # channels at half resolution
    num_res_blocks: int = 2
    # VQ-VAE
    beta: float = 0.25  # commitment weight β
    ema_codebook: bool = True
    ema_codebook_decay: float = 0.95  # γ
    restart_threshold: float = 0.5  # EMA count (codes per batch) under which a code restarts
    # Gumbel dVAE
    tau_start: float = 1.0
    tau_end: float = 1.0 / 16
    tau_steps: int = 1000  # τ decays exponentially from tau_start to tau_end over these steps
    kl_weight: float = 5e-3
    # training
    steps: int = 4000  # PSNR 29.0 dB at 2000 steps, 31.5 dB at 4000 (bench/results/dalle.md)
    batch_size: int = 32
    lr: float = 2e-3
    warmup_steps: int = 50
    weight_decay: float = 0.0
    n_train: int = 20_000

    def __post_init__(self):
        if self.kind not in ("vq", "gumbel"):
            raise ValueError(f"kind must be 'vq' or 'gumbel', got {self.kind!r}")
        if self.image_size % 4:
            raise ValueError(f"image_size={self.image_size} must be a multiple of 4 (4× down-sampling)")


PRESETS: dict[str, Config] = {
    "default": Config(),
    "tiny": Config(codebook_size=32, code_dim=8, width=16, hidden=8, num_res_blocks=1, steps=20,
                   batch_size=16, n_train=256, log_every=5, checkpoint_every=20, tau_steps=20,
                   restart_threshold=0.05),
    "tour": Config(steps=1200),
    "gumbel": Config(kind="gumbel"),
    "gpu": Config(width=256, hidden=128, steps=5000, batch_size=128, n_train=50_000),
}


# --------------------------------------------------------------------------------------------- layers
def space_to_depth(x_BHWC: jax.Array, f: int = 2) -> jax.Array:
    """(B, H, W, C) -> (B, H/f, W/f, f·f·C): each f×f block of pixels becomes one vector."""
    B, H, W, C = x_BHWC.shape
    x = x_BHWC.reshape(B, H // f, f, W // f, f, C)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(B, H // f, W // f, f * f * C)


def depth_to_space(x_BHWC: jax.Array, f: int = 2) -> jax.Array:
    """(B, H, W, f·f·C) -> (B, f·H, f·W, C); the inverse of `space_to_depth`."""
    B, H, W, FFC = x_BHWC.shape
    C = FFC // (f * f)
    x = x_BHWC.reshape(B, H, W, f, f, C)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(B, H * f, W * f, C)


class ResBlock(nnx.Module):
    """x + conv1x1(relu(conv3x3(relu(x)))): the VQ-VAE paper's residual block (no normalisation)."""

    def __init__(self, channels: int, *, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(channels, channels // 2, (3, 3), rngs=rngs)
        self.conv2 = nnx.Conv(channels // 2, channels, (1, 1), rngs=rngs)

    def __call__(self, x_BhwC: jax.Array) -> jax.Array:
        return x_BhwC + self.conv2(jax.nn.relu(self.conv1(jax.nn.relu(x_BhwC))))


class Encoder(nnx.Module):
    """Images (B, H, W, 3) in [-1, 1] -> (B, H/4, W/4, out): code vectors (VQ) or code logits (dVAE)."""

    def __init__(self, c: Config, out: int, *, rngs: nnx.Rngs):
        self.conv_in = nnx.Conv(4 * 3, c.hidden, (3, 3), rngs=rngs)
        self.conv_mid = nnx.Conv(4 * c.hidden, c.width, (3, 3), rngs=rngs)
        self.blocks = nnx.List([ResBlock(c.width, rngs=rngs) for _ in range(c.num_res_blocks)])
        self.conv_out = nnx.Conv(c.width, out, (1, 1), rngs=rngs)

    def __call__(self, x_BHW3: jax.Array) -> jax.Array:
        x = jax.nn.relu(self.conv_in(space_to_depth(x_BHW3)))  # (B, H/2, W/2, hidden)
        x = self.conv_mid(space_to_depth(x))  # (B, h, w, width)
        for block in self.blocks:
            x = block(x)
        return self.conv_out(jax.nn.relu(x))  # (B, h, w, out)


class Decoder(nnx.Module):
    """Code vectors (B, h, w, D) -> images (B, 4h, 4w, 3) in [-1, 1] (unclipped)."""

    def __init__(self, c: Config, *, rngs: nnx.Rngs):
        self.conv_in = nnx.Conv(c.code_dim, c.width, (3, 3), rngs=rngs)
        self.blocks = nnx.List([ResBlock(c.width, rngs=rngs) for _ in range(c.num_res_blocks)])
        self.conv_up = nnx.Conv(c.width, 4 * c.hidden, (3, 3), rngs=rngs)
        self.conv_mid = nnx.Conv(c.hidden, c.hidden, (3, 3), rngs=rngs)
        self.conv_out = nnx.Conv(c.hidden, 4 * 3, (3, 3), rngs=rngs)

    def __call__(self, z_BhwD: jax.Array) -> jax.Array:
        x = self.conv_in(z_BhwD)  # (B, h, w, width)
        for block in self.blocks:
            x = block(x)
        x = depth_to_space(self.conv_up(jax.nn.relu(x)))  # (B, 2h, 2w, hidden)
        x = jax.nn.relu(self.conv_mid(jax.nn.relu(x)))
        return depth_to_space(self.conv_out(x))  # (B, 4h, 4w, 3)


# ------------------------------------------------------------------------------------- quantisation
class CodebookStat(nnx.Variable):
    """Non-parameter state of the tokenizers (EMA codebook statistics, step counter): the loss updates
    it, the trainer carries it from step to step, the optimiser never sees it."""


def nearest_code(z_ND: jax.Array, codebook_VD: jax.Array) -> jax.Array:
    """argmin_v |z - e_v|² = argmin_v (|e_v|² - 2 z·e_v)  (|z|² is the same for every v) -> int32 (N,)."""
    d_NV = jnp.sum(codebook_VD**2, -1) - 2 * jnp.einsum("nd,vd->nv", z_ND, codebook_VD)
    return jnp.argmin(d_NV, axis=-1).astype(jnp.int32)


def straight_through(z_e: jax.Array, z_q: jax.Array) -> jax.Array:
    """z_e + sg(z_q - z_e): the value of z_q, the gradient of z_e (identity Jacobian)."""
    return z_e + jax.lax.stop_gradient(z_q - z_e)


def commitment_loss(z_ND: jax.Array, e_ND: jax.Array) -> jax.Array:
    """mean |z_e - sg(e)|²: pulls the encoder towards its codes; no gradient reaches the codebook."""
    return jnp.mean((z_ND - jax.lax.stop_gradient(e_ND)) ** 2)


def ema_update(count_V, sum_VD, z_ND, codes_N, decay):
    """One EMA step of the codebook statistics: n_v <- γ n_v + (1-γ) #{k=v}, m_v <- γ m_v + (1-γ) Σ_{k=v} z.

    Returns (count_V, sum_VD, codebook_VD) with e_v = m_v / max(n_v, ε)."""
    onehot_NV = jax.nn.one_hot(codes_N, count_V.shape[0], dtype=z_ND.dtype)
    count_V = decay * count_V + (1 - decay) * onehot_NV.sum(0)
    sum_VD = decay * sum_VD + (1 - decay) * jnp.einsum("nv,nd->vd", onehot_NV, z_ND)
    return count_V, sum_VD, sum_VD / jnp.maximum(count_V, 1e-5)[:, None]


def perplexity(codes_N: jax.Array, V: int) -> jax.Array:
    """exp(H(p)) of the code histogram p: V when all codes are equally used, 1 when one code is."""
    p_V = jnp.bincount(codes_N.reshape(-1), length=V) / codes_N.size
    return jnp.exp(-jnp.sum(jnp.where(p_V > 0, p_V * jnp.log(jnp.where(p_V > 0, p_V, 1.0)), 0.0)))


def psnr(mse: jax.Array) -> jax.Array:
    """Peak signal-to-noise ratio of images in [-1, 1] (peak-to-peak 2): 10 log10(2² / MSE) dB."""
    return 10.0 * jnp.log10(4.0 / mse)


# --------------------------------------------------------------------------------------- tokenizers
class VQVAE(nnx.Module):
    """Conv encoder -> nearest-code quantisation -> conv decoder (see the module docstring)."""

    def __init__(self, c: Config, *, rngs: nnx.Rngs):
        self.config = c
        self.codebook_size, self.grid = c.codebook_size, c.image_size // 4
        self.encoder = Encoder(c, c.code_dim, rngs=rngs)
        self.decoder = Decoder(c, rngs=rngs)
        init_VD = jax.random.uniform(rngs.params(), (c.codebook_size, c.code_dim), minval=-1, maxval=1)
        if c.ema_codebook:
            self.codebook = CodebookStat(init_VD)
            self.ema_count = CodebookStat(jnp.ones((c.codebook_size,)))
            self.ema_sum = CodebookStat(jnp.copy(init_VD))  # its own buffer (the trainer donates state)
        else:
            self.codebook = nnx.Param(init_VD)

    def encode(self, images_BHW3: jax.Array) -> jax.Array:
        """images float (B, H, W, 3) in [-1, 1] -> codes int32 (B, h, w)."""
        z_BhwD = self.encoder(images_BHW3)
        B, h, w, D = z_BhwD.shape
        return nearest_code(z_BhwD.reshape(-1, D), self.codebook[...]).reshape(B, h, w)

    def decode(self, codes_Bhw: jax.Array) -> jax.Array:
        """codes int32 (B, h, w) -> images float32 (B, 4h, 4w, 3) in about [-1, 1]."""
        return self.decoder(jnp.take(self.codebook[...], codes_Bhw, axis=0))

    def loss(self, images_BHW3: jax.Array, rng: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        c = self.config
        z_BhwD = self.encoder(images_BHW3)
        B, h, w, D = z_BhwD.shape
        z_ND = z_BhwD.reshape(-1, D)
        codebook_VD = self.codebook[...]
        codes_N = nearest_code(jax.lax.stop_gradient(z_ND), codebook_VD)
        e_ND = jnp.take(codebook_VD, codes_N, axis=0)
        recon_BHW3 = self.decoder(straight_through(z_ND, e_ND).reshape(B, h, w, D))
        mse = jnp.mean((recon_BHW3 - images_BHW3) ** 2)
        commit = commitment_loss(z_ND, e_ND)
        loss = mse + c.beta * commit
        if c.ema_codebook:
            self._ema_step(jax.lax.stop_gradient(z_ND), codes_N, rng)
        else:
            loss = loss + commitment_loss(e_ND, z_ND)  # codebook loss |sg(z_e) - e|²
        used = jnp.bincount(codes_N, length=self.codebook_size) > 0
        return loss, {"mse": mse, "psnr": psnr(mse), "commit": commit,
                      "perplexity": perplexity(codes_N, self.codebook_size), "usage": used.mean()}

    def _ema_step(self, z_ND: jax.Array, codes_N: jax.Array, rng: jax.Array) -> None:
        """EMA codebook update, then restart each dead code (count < threshold) on a random z of the batch."""
        c = self.config
        count_V, sum_VD, codebook_VD = ema_update(self.ema_count[...], self.ema_sum[...], z_ND, codes_N,
                                                  c.ema_codebook_decay)
        dead_V = count_V < c.restart_threshold
        pick_V = jax.random.randint(rng, (self.codebook_size,), 0, z_ND.shape[0])
        fresh_VD = z_ND[pick_V]
        # A restarted code starts with count 1 (so it survives a while) and mean = the picked vector.
        self.ema_count[...] = jnp.where(dead_V, 1.0, count_V)
        self.ema_sum[...] = jnp.where(dead_V[:, None], fresh_VD, sum_VD)
        self.codebook[...] = jnp.where(dead_V[:, None], fresh_VD, codebook_VD)


def gumbel_temperature(step, c: Config) -> jax.Array:
    """τ(s) = τ_start (τ_end / τ_start)^min(s / S, 1): exponential annealing over `tau_steps`."""
    frac = jnp.minimum(jnp.asarray(step, jnp.float32) / c.tau_steps, 1.0)
    return c.tau_start * (c.tau_end / c.tau_start) ** frac


def gumbel_softmax(logits_NV: jax.Array, tau, rng: jax.Array) -> jax.Array:
    """Relaxed one-hot sample softmax((logits + g) / τ), g = -log(-log u), u ~ U(0, 1).

    As τ -> 0 it becomes the one-hot of argmax(logits + g), a sample of softmax(logits); as τ -> ∞ it
    becomes uniform."""
    g_NV = jax.random.gumbel(rng, logits_NV.shape, logits_NV.dtype)
    return jax.nn.softmax((logits_NV + g_NV) / tau, axis=-1)


def kl_to_uniform(logits_NV: jax.Array) -> jax.Array:
    """Mean over cells of KL(q ‖ U(V)) = Σ_v q_v log q_v + log V, with q = softmax(logits)."""
    logq_NV = jax.nn.log_softmax(logits_NV, axis=-1)
    return jnp.mean(jnp.sum(jnp.exp(logq_NV) * logq_NV, -1) + jnp.log(logits_NV.shape[-1]))


class GumbelVAE(nnx.Module):
    """DALL-E's discrete VAE: logits over codes per cell, Gumbel-softmax relaxation while training."""

    def __init__(self, c: Config, *, rngs: nnx.Rngs):
        self.config = c
        self.codebook_size, self.grid = c.codebook_size, c.image_size // 4
        self.encoder = Encoder(c, c.codebook_size, rngs=rngs)
        self.decoder = Decoder(c, rngs=rngs)
        self.codebook = nnx.Param(jax.random.normal(rngs.params(), (c.codebook_size, c.code_dim)))
        self.step = CodebookStat(jnp.zeros((), jnp.int32))  # drives the temperature schedule

    def encode(self, images_BHW3: jax.Array) -> jax.Array:
        """images float (B, H, W, 3) in [-1, 1] -> codes int32 (B, h, w): the most likely code per cell."""
        return jnp.argmax(self.encoder(images_BHW3), axis=-1).astype(jnp.int32)

    def decode(self, codes_Bhw: jax.Array) -> jax.Array:
        return self.decoder(jnp.take(self.codebook[...], codes_Bhw, axis=0))

    def loss(self, images_BHW3: jax.Array, rng: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        c = self.config
        logits_BhwV = self.encoder(images_BHW3)
        B, h, w, V = logits_BhwV.shape
        logits_NV = logits_BhwV.reshape(-1, V)
        tau = gumbel_temperature(self.step[...], c)
        y_NV = gumbel_softmax(logits_NV, tau, rng)
        z_BhwD = jnp.einsum("nv,vd->nd", y_NV, self.codebook[...]).reshape(B, h, w, -1)
        mse = jnp.mean((self.decoder(z_BhwD) - images_BHW3) ** 2)
        kl = kl_to_uniform(logits_NV)
        self.step[...] = self.step[...] + 1
        codes_N = jnp.argmax(logits_NV, -1)
        used = jnp.bincount(codes_N, length=V) > 0
        return mse + c.kl_weight * kl, {"mse": mse, "psnr": psnr(mse), "kl": kl, "tau": tau,
                                        "perplexity": perplexity(codes_N, V), "usage": used.mean()}


# ------------------------------------------------------------------------------------------- family
def build(config: Config, tokenizer: Any, rngs: nnx.Rngs) -> VQVAE | GumbelVAE:
    """The image tokenizer `config.kind` names; it reads images only, so `tokenizer` is unused."""
    del tokenizer
    return (VQVAE if config.kind == "vq" else GumbelVAE)(config, rngs=rngs)


def loss_fn(model, batch: dict[str, Any], rng: jax.Array):
    return model.loss(batch["images"], rng)


def _split_jit(model, method: str):
    """jax.jit of `model.<method>` as a pure function of the model's state (cheap per call)."""
    graphdef, state = nnx.split(model)

    @jax.jit
    def run(state, x):
        return getattr(nnx.merge(graphdef, state), method)(x)

    return lambda x: run(state, x)


def encode_in_batches(model, images_uint8: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """Codes int32 (N, h, w) of many uint8 images, one jit-compiled encode per chunk."""
    encode = _split_jit(model, "encode")
    out = [np.asarray(encode(normalize_images(images_uint8[i:i + batch_size])))
           for i in range(0, len(images_uint8), batch_size)]
    return np.concatenate(out).astype(np.int32)


def decode_in_batches(model, codes: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """uint8 images (N, H, W, 3) drawn from codes int32 (N, h, w)."""
    decode = _split_jit(model, "decode")
    out = [denormalize_images(decode(jnp.asarray(codes[i:i + batch_size])))
           for i in range(0, len(codes), batch_size)]
    return np.concatenate(out)


def _eval_images(config: Config, n: int) -> np.ndarray:
    """Fresh images of the training source (a different seed than the training set)."""
    return load_examples(config.data, "train", n=n, image_size=config.image_size,
                         seed=config.seed + 10_007)["images"]


def reconstruction_metrics(model, images_uint8: np.ndarray) -> dict[str, float]:
    """MSE and PSNR (on [-1, 1] pixels, after rounding to uint8), codebook usage and perplexity."""
    codes = encode_in_batches(model, images_uint8)
    recon = decode_in_batches(model, codes)
    mse = float(np.mean((normalize_images(recon) - normalize_images(images_uint8)) ** 2))
    counts = np.bincount(codes.reshape(-1), minlength=model.codebook_size)
    return {"mse": mse, "psnr": float(psnr(mse)), "usage": float(np.mean(counts > 0)),
            "perplexity": float(perplexity(jnp.asarray(codes), model.codebook_size))}


def evaluate(model, config: Config, tokenizer: Any, workdir: Any) -> dict[str, float]:
    del tokenizer, workdir
    return reconstruction_metrics(model, _eval_images(config, 128 if config.n_train < 1000 else 2000))


def sample_grid(model, config: Config, tokenizer: Any, rng: jax.Array, workdir: Any = None) -> np.ndarray:
    """Eight images (top row) above their reconstructions (bottom row)."""
    del tokenizer, rng
    images = _eval_images(config, 8)
    return np.concatenate([images, decode_in_batches(model, encode_in_batches(model, images))])


@dataclasses.dataclass
class Pipeline:
    """What `minimodal.load(workdir)` returns for an image tokenizer: uint8 images <-> int32 codes."""

    model: Any
    config: Config
    workdir: Path | None = None

    @property
    def grid(self) -> int:
        return self.model.grid

    @property
    def codebook_size(self) -> int:
        return self.model.codebook_size

    def encode(self, images_uint8: np.ndarray) -> np.ndarray:
        images = np.asarray(images_uint8)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (
                self.config.image_size, self.config.image_size, 3):
            raise ValueError(f"encode expects uint8 (N, {self.config.image_size}, {self.config.image_size}, 3)"
                             f" images; got {images.dtype} {images.shape}")
        return encode_in_batches(self.model, images)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        codes = np.asarray(codes)
        if codes.ndim != 3 or codes.shape[1:] != (self.grid, self.grid):
            raise ValueError(f"decode expects int codes (N, {self.grid}, {self.grid}); got {codes.shape}")
        if codes.min() < 0 or codes.max() >= self.codebook_size:
            raise ValueError(f"codes must lie in [0, {self.codebook_size}); got [{codes.min()}, {codes.max()}]")
        return decode_in_batches(self.model, codes.astype(np.int32))

    def reconstruct(self, images_uint8: np.ndarray) -> np.ndarray:
        return self.decode(self.encode(images_uint8))


def pipeline(model, config: Config, tokenizer: Any, workdir: Any) -> Pipeline:
    del tokenizer
    return Pipeline(model, config, Path(workdir) if workdir is not None else None)


FAMILY = Family(name="vqvae", config_class=Config, presets=PRESETS, build=build, loss_fn=loss_fn,
                sample_grid=sample_grid, evaluate=evaluate, pipeline=pipeline)
