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
* VQGAN (Esser et al. 2021) is the VQ-VAE with `disc_weight > 0` (`--preset vqgan`): a patch discriminator
  D gives one logit per overlapping patch and learns by the hinge loss
      L_D = ½ [mean relu(1 - D(x)) + mean relu(1 + D(x̂))],
  while the tokenizer adds L_G = -mean D(x̂) once `disc_start` steps of reconstruction alone are done:
      L = L_rec + disc_weight · λ · L_G + β |z_e - sg(e_k)|²,   L_rec = |x̂ - x|² + perceptual_weight · L_perc,
      λ = ‖∇_{G_L} L_rec‖ / (‖∇_{G_L} L_G‖ + 1e-4)   (G_L: the decoder's last kernel; clipped to [0, 1e4], no grad)
  so the adversarial gradient reaching the decoder's last layer is `disc_weight` times the reconstruction's.
  D is the trainer's second optimiser (`train.Group`: Adam, β = (0.5, 0.9), `disc_lr`), updated after the
  tokenizer on the same batch. The perceptual term: LPIPS needs a pretrained VGG, and none exists offline.
  With `perceptual_clip=DIR` it compares a trained CLIP's image-encoder features after every block (frozen,
  unit-normalised over channels: LPIPS without its learned weights). Without one it falls back to the
  Laplacian-pyramid L1 ("Lap1", Bojanowski et al. 2018): each band-pass level's mean |L_j(x̂) - L_j(x)|, a
  parameter-free loss that weighs edges at every scale where the squared error forgives blur. (A network
  with random weights is the other offline choice; its features are arbitrary, so it was not taken.)

A 32 px image becomes an 8 × 8 grid: two space-to-depth steps of 2 (fewer, larger matmuls than strided
convs on the CPU), and two depth-to-space steps back; with `downsample=2` one step each way (2 × 2 pixels per
token: 16 px -> 8 × 8, DALL-E's `fine` preset).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from minimodal import config as configlib
from minimodal.config import TrainConfig
from minimodal.data import denormalize_images, load_examples, normalize_images
from minimodal.nn import GroupNorm
from minimodal.train import Family, Group


@dataclasses.dataclass(frozen=True)
class Config(TrainConfig):
    """Image tokenizer config; `kind` picks the VQ-VAE ("vq") or the Gumbel-softmax dVAE ("gumbel")."""

    kind: str = "vq"
    codebook_size: int = 512  # V
    code_dim: int = 32  # D
    downsample: int = 4  # pixels per token side: 4 (two space-to-depth steps of 2) or 2 (one)
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
    # VQGAN (kind "vq"): patch discriminator + perceptual term; disc_weight = 0 and perceptual_weight = 0: VQ-VAE
    disc_weight: float = 0.0  # scale of the adaptive weight λ of the adversarial term (0: no discriminator)
    disc_start: int = 0  # steps of reconstruction alone before the discriminator and L_G start
    disc_lr: float = 2e-4  # the discriminator's Adam (β1 0.5, β2 0.9), constant rate
    disc_width: int = 32  # channels of its first layer (doubled per stride-2 layer)
    disc_layers: int = 2  # stride-2 4×4 convolutions: one logit per (2^layers)-pixel cell
    perceptual_weight: float = 0.0
    perceptual_clip: str = ""  # a trained CLIP's work directory (its image encoder's features); "": Laplacian L1
    laplacian_levels: int = 3
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
        if self.downsample not in (2, 4):
            raise ValueError(f"downsample must be 2 or 4 (pixels per token side), got {self.downsample}")
        if self.image_size % self.downsample:
            raise ValueError(f"image_size={self.image_size} must be a multiple of downsample={self.downsample}")
        if min(self.disc_weight, self.perceptual_weight, self.disc_start) < 0 or not self.disc_lr > 0:
            raise ValueError("disc_weight, perceptual_weight and disc_start must not be negative and disc_lr "
                             "must be positive")
        if (self.disc_weight or self.perceptual_weight) and self.kind != "vq":
            raise ValueError("the VQGAN terms (disc_weight, perceptual_weight) need kind='vq'")
        if self.disc_weight and (self.disc_layers < 1 or self.image_size % 2 ** self.disc_layers):
            raise ValueError(f"disc_layers={self.disc_layers} must be >= 1 and 2^disc_layers must divide "
                             f"image_size={self.image_size}")
        if self.perceptual_weight and not self.perceptual_clip and (
                self.laplacian_levels < 1 or self.image_size % 2 ** self.laplacian_levels):
            raise ValueError(f"laplacian_levels={self.laplacian_levels} must be >= 1 and 2^laplacian_levels "
                             f"must divide image_size={self.image_size}")


PRESETS: dict[str, Config] = {
    "default": Config(),
    "tiny": Config(codebook_size=32, code_dim=8, width=16, hidden=8, num_res_blocks=1, steps=20,
                   batch_size=16, n_train=256, log_every=5, checkpoint_every=20, tau_steps=20,
                   restart_threshold=0.05),
    "fast": Config(image_size=16, steps=2000),  # the fast tour's DALL-E tokenizer: a 4×4 grid
    # DALL-E's `fine` preset: 16 px cut into 2×2-pixel tokens (an 8×8 grid); flat shapes on black need few codes
    "fine": Config(image_size=16, downsample=2, codebook_size=128, steps=2000),
    "gumbel": Config(kind="gumbel"),
    # VQGAN at the default's size, Laplacian perceptual term: 31.9 dB, 100% of codes, 6.6 min on 2 cores (README)
    "vqgan": Config(steps=4000, disc_weight=0.1, disc_start=1000, perceptual_weight=0.1),
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
    """Images (B, H, W, 3) in [-1, 1] -> (B, H/f, W/f, out) with f = `downsample`: code vectors (VQ) or code
    logits (dVAE)."""

    def __init__(self, c: Config, out: int, *, rngs: nnx.Rngs):
        self.fold_twice = c.downsample == 4
        self.conv_in = nnx.Conv(4 * 3, c.hidden, (3, 3), rngs=rngs)
        self.conv_mid = nnx.Conv((4 if self.fold_twice else 1) * c.hidden, c.width, (3, 3), rngs=rngs)
        self.blocks = nnx.List([ResBlock(c.width, rngs=rngs) for _ in range(c.num_res_blocks)])
        self.conv_out = nnx.Conv(c.width, out, (1, 1), rngs=rngs)

    def __call__(self, x_BHW3: jax.Array) -> jax.Array:
        x = jax.nn.relu(self.conv_in(space_to_depth(x_BHW3)))  # (B, H/2, W/2, hidden)
        x = self.conv_mid(space_to_depth(x) if self.fold_twice else x)  # (B, h, w, width)
        for block in self.blocks:
            x = block(x)
        return self.conv_out(jax.nn.relu(x))  # (B, h, w, out)


class Decoder(nnx.Module):
    """Code vectors (B, h, w, D) -> images (B, fh, fw, 3) in [-1, 1] (unclipped), f = `downsample`."""

    def __init__(self, c: Config, *, rngs: nnx.Rngs):
        self.unfold_twice = c.downsample == 4
        self.conv_in = nnx.Conv(c.code_dim, c.width, (3, 3), rngs=rngs)
        self.blocks = nnx.List([ResBlock(c.width, rngs=rngs) for _ in range(c.num_res_blocks)])
        self.conv_up = nnx.Conv(c.width, (4 if self.unfold_twice else 1) * c.hidden, (3, 3), rngs=rngs)
        self.conv_mid = nnx.Conv(c.hidden, c.hidden, (3, 3), rngs=rngs)
        self.conv_out = nnx.Conv(c.hidden, 4 * 3, (3, 3), rngs=rngs)

    def features(self, z_BhwD: jax.Array) -> jax.Array:
        """Everything but the last layer: (B, h, w, D) -> (B, fh/2, fw/2, hidden), the input of `conv_out`."""
        x = self.conv_in(z_BhwD)  # (B, h, w, width)
        for block in self.blocks:
            x = block(x)
        x = self.conv_up(jax.nn.relu(x))
        x = depth_to_space(x) if self.unfold_twice else x  # (B, fh/2, fw/2, hidden)
        return jax.nn.relu(self.conv_mid(jax.nn.relu(x)))

    def head(self, x_BHWC: jax.Array, kernel: jax.Array | None = None) -> jax.Array:
        """The last layer G_L (optionally with another kernel): (B, fh/2, fw/2, hidden) -> (B, fh, fw, 3)."""
        if kernel is None:
            return depth_to_space(self.conv_out(x_BHWC))
        y = jax.lax.conv_general_dilated(x_BHWC, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return depth_to_space(y + self.conv_out.bias[...])

    def __call__(self, z_BhwD: jax.Array) -> jax.Array:
        return self.head(self.features(z_BhwD))  # (B, fh, fw, 3)


# ------------------------------------------------------------------------------------------ VQGAN parts
class PatchDiscriminator(nnx.Module):
    """PatchGAN (Isola et al. 2017), as VQGAN uses it: `disc_layers` 4×4 stride-2 convolutions with leaky ReLU
    (GroupNorm after all but the first), then a 3×3 convolution to one logit per cell: (B, H/2^L, W/2^L)."""

    def __init__(self, c: Config, *, rngs: nnx.Rngs):
        widths = [c.disc_width * 2 ** i for i in range(c.disc_layers)]
        init = nnx.initializers.normal(0.02)  # VQGAN's discriminator init: N(0, 0.02²)
        self.downs = nnx.List([nnx.Conv(a, b, (4, 4), strides=2, kernel_init=init, rngs=rngs)
                               for a, b in zip([3, *widths[:-1]], widths)])
        self.norms = nnx.List([GroupNorm(w, min(8, w)) for w in widths[1:]])
        self.conv_out = nnx.Conv(widths[-1], 1, (3, 3), kernel_init=init, rngs=rngs)

    def __call__(self, x_BHW3: jax.Array) -> jax.Array:
        x = x_BHW3
        for i, conv in enumerate(self.downs):
            x = conv(x)  # (B, H/2^(i+1), W/2^(i+1), widths[i])
            x = jax.nn.leaky_relu(self.norms[i - 1](x) if i else x, 0.2)
        return self.conv_out(x)[..., 0]  # (B, H/2^L, W/2^L) logits


def hinge_d_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
    """L_D = ½ [mean relu(1 - D(x)) + mean relu(1 + D(x̂))]: zero once real logits ≥ 1 and fake ≤ -1."""
    return 0.5 * (jnp.mean(jax.nn.relu(1.0 - real_logits)) + jnp.mean(jax.nn.relu(1.0 + fake_logits)))


def hinge_g_loss(fake_logits: jax.Array) -> jax.Array:
    """L_G = -mean D(x̂): the generator raises the discriminator's logits on its reconstructions."""
    return -jnp.mean(fake_logits)


def adaptive_weight(grad_rec: jax.Array, grad_gan: jax.Array, max_weight: float = 1e4) -> jax.Array:
    """λ = ‖∇_{G_L} L_rec‖ / (‖∇_{G_L} L_GAN‖ + 1e-4), clipped to [0, max_weight], without gradient."""
    lam = jnp.linalg.norm(grad_rec) / (jnp.linalg.norm(grad_gan) + 1e-4)
    return jax.lax.stop_gradient(jnp.clip(lam, 0.0, max_weight))


def with_gradient(x: jax.Array, g: jax.Array) -> jax.Array:
    """Σ sg(g) · (x - sg(x)): the value 0, the gradient `g` w.r.t. x. Lets a loss whose gradient w.r.t. x was
    already computed (value_and_grad on sg(x)) pass it on to what made x without a second backward pass."""
    return jnp.sum(jax.lax.stop_gradient(g) * (x - jax.lax.stop_gradient(x)))


def laplacian_pyramid_l1(x_BHWC: jax.Array, y_BHWC: jax.Array, levels: int = 3) -> jax.Array:
    """Mean over levels of mean |L_j(x) - L_j(y)|: L_j = G_j - up(G_{j+1}) (band-pass), G_{j+1} = 2×2 average
    of G_j, up = nearest; the last level is the low-pass G_levels itself."""
    def down(a):
        B, H, W, C = a.shape
        return a.reshape(B, H // 2, 2, W // 2, 2, C).mean(axis=(2, 4))

    up = lambda a: a.repeat(2, axis=1).repeat(2, axis=2)  # noqa: E731
    d = x_BHWC - y_BHWC  # the pyramid is linear: L_j(x) - L_j(y) = L_j(x - y)
    total = 0.0
    for _ in range(levels):
        low = down(d)
        total = total + jnp.mean(jnp.abs(d - up(low)))
        d = low
    return (total + jnp.mean(jnp.abs(d))) / (levels + 1)


class Frozen(nnx.Variable):
    """Weights no optimiser sees (the perceptual network's): carried in the trainer's non-Param state."""


def _frozen_zeros(module: nnx.Module) -> nnx.Module:
    """Turn every nnx.Param of an abstract module (`nnx.eval_shape`) into a `Frozen` array of zeros."""
    for _, sub in list(nnx.iter_modules(module)):
        for name, value in list(vars(sub).items()):
            if isinstance(value, nnx.Param):
                shape = value.get_value()
                setattr(sub, name, Frozen(jnp.zeros(shape.shape, shape.dtype)))
    return module


class ClipFeatures(nnx.Module):
    """A trained CLIP's image encoder, frozen: images in [-1, 1] -> its feature maps after every block.

    Built from the CLIP work directory's config.json; its weights are copied in by `warm_start` (a fresh
    run) and from then on travel in the tokenizer's checkpoints."""

    def __init__(self, clip_dir: str):
        from minimodal import clip as cliplib
        from minimodal.workdir import CONFIG_FILE, model_name

        if model_name(clip_dir) != "clip":
            raise ValueError(f"perceptual_clip={clip_dir!r} is not a trained CLIP's work directory; train one with "
                             "`minimodal train clip --workdir DIR` or leave perceptual_clip empty (Laplacian L1)")
        c = configlib.load(cliplib.Config, Path(clip_dir) / CONFIG_FILE)
        if c.encoder == "vit":
            make = lambda: cliplib.ViT(c.image_size, c.patch, c.image_width, c.image_depth, c.image_heads,  # noqa: E731
                                       rngs=nnx.Rngs(0))
        else:
            make = lambda: cliplib.ConvEncoder(c.image_width, c.image_depth, rngs=nnx.Rngs(0))  # noqa: E731
        self.encoder = _frozen_zeros(nnx.eval_shape(make))  # the shapes only: the weights are copied in
        self.image_size = c.image_size

    def __call__(self, x_BHW3: jax.Array) -> list[jax.Array]:
        B, H, W, _ = x_BHW3.shape
        if (H, W) != (self.image_size, self.image_size):
            x_BHW3 = jax.image.resize(x_BHW3, (B, self.image_size, self.image_size, 3), "bilinear")
        enc, feats = self.encoder, []
        if hasattr(enc, "transformer"):  # ViT: tokens after each block
            x = enc.patch_embed(x_BHW3) + enc.pos_ND[...]
            for block in enc.transformer.blocks:
                x = block(x)
                feats.append(x)  # (B, N, D)
            return feats
        x = enc.stem(x_BHW3)  # ConvEncoder: maps after each stage
        for i, stage in enumerate(enc.stages):
            if i > 0:
                x = enc.downs[i - 1](x)
            for block in stage:
                x = block(x)
            feats.append(x)  # (B, H', W', C')
        return feats


def feature_distance(feats_a: list[jax.Array], feats_b: list[jax.Array]) -> jax.Array:
    """Mean over layers of mean_positions |f̂_a - f̂_b|², f̂ = f / ‖f‖ over channels (LPIPS without weights)."""
    unit = lambda f: f / jnp.sqrt(jnp.sum(f**2, axis=-1, keepdims=True) + 1e-10)  # noqa: E731
    return sum(jnp.mean(jnp.sum((unit(a) - unit(b)) ** 2, -1)) for a, b in zip(feats_a, feats_b)) / len(feats_a)


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
        self.codebook_size, self.grid = c.codebook_size, c.image_size // c.downsample
        self.encoder = Encoder(c, c.code_dim, rngs=rngs)
        self.decoder = Decoder(c, rngs=rngs)
        init_VD = jax.random.uniform(rngs.params(), (c.codebook_size, c.code_dim), minval=-1, maxval=1)
        if c.ema_codebook:
            self.codebook = CodebookStat(init_VD)
            self.ema_count = CodebookStat(jnp.ones((c.codebook_size,)))
            self.ema_sum = CodebookStat(jnp.copy(init_VD))  # its own buffer (the trainer donates state)
        else:
            self.codebook = nnx.Param(init_VD)
        # VQGAN (None in the plain VQ-VAE, whose state stays exactly what it was)
        self.discriminator = PatchDiscriminator(c, rngs=rngs) if c.disc_weight > 0 else None
        self.perceptual = ClipFeatures(c.perceptual_clip) if c.perceptual_weight > 0 and c.perceptual_clip else None
        if c.disc_weight > 0 or c.perceptual_weight > 0:
            self.gan_step = CodebookStat(jnp.zeros((), jnp.int32))  # main-loss calls: starts the discriminator

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
        if c.disc_weight > 0 or c.perceptual_weight > 0:
            return self.vqgan_loss(images_BHW3, rng)
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

    def reconstruction_loss(self, recon_BHW3: jax.Array, images_BHW3: jax.Array):
        """L_rec = |x̂ - x|² + perceptual_weight · L_perc -> (L_rec, {mse, perceptual})."""
        c = self.config
        mse = jnp.mean((recon_BHW3 - images_BHW3) ** 2)
        if not c.perceptual_weight:
            return mse, {"mse": mse, "perceptual": jnp.zeros(())}
        if self.perceptual is not None:
            perceptual = feature_distance(self.perceptual(recon_BHW3),
                                          [jax.lax.stop_gradient(f) for f in self.perceptual(images_BHW3)])
        else:
            perceptual = laplacian_pyramid_l1(recon_BHW3, images_BHW3, c.laplacian_levels)
        return mse + c.perceptual_weight * perceptual, {"mse": mse, "perceptual": perceptual}

    def vqgan_loss(self, images_BHW3: jax.Array, rng: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        """L_rec + disc_weight · λ · L_G + β commit (module docstring). Everything downstream of x̂ (squared
        error, perceptual network, discriminator) is differentiated once w.r.t. x̂; the gradient at the last
        layer G_L then follows by one small vjp, and `with_gradient` hands the total on to the decoder."""
        c = self.config
        z_BhwD = self.encoder(images_BHW3)
        B, h, w, D = z_BhwD.shape
        z_ND = z_BhwD.reshape(-1, D)
        codebook_VD = self.codebook[...]
        codes_N = nearest_code(jax.lax.stop_gradient(z_ND), codebook_VD)
        e_ND = jnp.take(codebook_VD, codes_N, axis=0)
        feats = self.decoder.features(straight_through(z_ND, e_ND).reshape(B, h, w, D))
        recon_BHW3 = self.decoder.head(feats)
        x_hat = jax.lax.stop_gradient(recon_BHW3)
        (rec, parts), g_rec = jax.value_and_grad(self.reconstruction_loss, has_aux=True)(x_hat, images_BHW3)
        # ∇_{G_L} of a loss whose gradient w.r.t. x̂ is g: the vjp of x̂(W) = head(feats, W) (linear in W)
        _, head_vjp = jax.vjp(lambda k: self.decoder.head(jax.lax.stop_gradient(feats), k),
                              jax.lax.stop_gradient(self.decoder.conv_out.kernel[...]))
        if self.discriminator is not None:
            gan, g_gan = jax.value_and_grad(lambda x: hinge_g_loss(self.discriminator(x)))(x_hat)
            # 0 before disc_start. (Computed anyway: a lax.cond made the whole step 14× slower on XLA's CPU
            # backend, whose conditional branches run on a slow path.)
            active = (self.gan_step[...] >= c.disc_start).astype(jnp.float32)
            gan, lam = active * gan, active * adaptive_weight(head_vjp(g_rec)[0], head_vjp(g_gan)[0])
        else:
            gan, lam, g_gan = jnp.zeros(()), jnp.zeros(()), jnp.zeros_like(x_hat)
        weight = c.disc_weight * lam
        commit = commitment_loss(z_ND, e_ND)
        loss = (with_gradient(recon_BHW3, g_rec + weight * g_gan) + jax.lax.stop_gradient(rec + weight * gan)
                + c.beta * commit)
        self.gan_step[...] = self.gan_step[...] + 1
        if c.ema_codebook:
            self._ema_step(jax.lax.stop_gradient(z_ND), codes_N, rng)
        else:
            loss = loss + commitment_loss(e_ND, z_ND)
        used = jnp.bincount(codes_N, length=self.codebook_size) > 0
        return loss, {**parts, "psnr": psnr(parts["mse"]), "commit": commit, "g_loss": gan, "adaptive_weight": lam,
                      "perplexity": perplexity(codes_N, self.codebook_size), "usage": used.mean()}

    def discriminator_loss(self, images_BHW3: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Hinge L_D on real images and their reconstructions, once the tokenizer has taken `disc_start` steps
        (its loss, which runs first in each training step, has counted this step already): 0 before, and a zero
        gradient leaves Adam's parameters where they are."""
        fake_BHW3 = jax.lax.stop_gradient(self.decode(self.encode(images_BHW3)))
        real, fake = jnp.split(self.discriminator(jnp.concatenate([images_BHW3, fake_BHW3])), 2)
        active = (self.gan_step[...] > self.config.disc_start).astype(jnp.float32)  # computed anyway: see vqgan_loss
        return active * hinge_d_loss(real, fake), {"real_logit": active * jnp.mean(real),
                                                   "fake_logit": active * jnp.mean(fake)}

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
        self.codebook_size, self.grid = c.codebook_size, c.image_size // c.downsample
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


def discriminator_loss_fn(model, batch: dict[str, Any], rng: jax.Array):
    """The VQGAN discriminator's loss (the trainer's `Group`: it updates `model.discriminator` only)."""
    del rng
    return model.discriminator_loss(batch["images"])


def discriminator_optimizer(config: Config) -> optax.GradientTransformation:
    """Adam with β = (0.5, 0.9) at the constant `disc_lr` (VQGAN's), after global-norm clipping."""
    return optax.chain(optax.clip_by_global_norm(config.grad_clip), optax.adam(config.disc_lr, b1=0.5, b2=0.9))


def warm_start(model, config: Config, tokenizer: Any, workdir: str | Path) -> None:
    """With `perceptual_clip`, copy that trained CLIP's image encoder into the frozen perceptual network."""
    del tokenizer, workdir
    if getattr(model, "perceptual", None) is None:
        return
    from minimodal.train import load_model

    _, clip_model, _, _ = load_model(config.perceptual_clip)
    theirs = dict(nnx.iter_graph(clip_model.image_encoder))
    for path, variable in nnx.iter_graph(model.perceptual.encoder):
        if isinstance(variable, Frozen):
            variable[...] = theirs[path][...]


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


def edge_ratio(recon_uint8: np.ndarray, images_uint8: np.ndarray) -> float:
    """mean |∇x̂| / mean |∇x| (horizontal and vertical pixel differences): 1 when the reconstructions' edges are
    as strong as the originals', below 1 when they are blurred."""
    def strength(x):
        x = x.astype(np.float64)
        return np.abs(np.diff(x, axis=1)).mean() + np.abs(np.diff(x, axis=2)).mean()

    return float(strength(recon_uint8) / max(strength(images_uint8), 1e-12))


def reconstruction_metrics(model, images_uint8: np.ndarray, objects: Any = None) -> dict[str, float]:
    """MSE and PSNR (on [-1, 1] pixels, after rounding to uint8), codebook usage and perplexity, the edge
    ratio; with the images' one-object shapes `objects`, `recon_fidelity`: the share of reconstructions the
    exact grader reads back with the original's colour and shape."""
    codes = encode_in_batches(model, images_uint8)
    recon = decode_in_batches(model, codes)
    mse = float(np.mean((normalize_images(recon) - normalize_images(images_uint8)) ** 2))
    counts = np.bincount(codes.reshape(-1), minlength=model.codebook_size)
    out = {"mse": mse, "psnr": float(psnr(mse)), "usage": float(np.mean(counts > 0)),
           "perplexity": float(perplexity(jnp.asarray(codes), model.codebook_size)),
           "edge_ratio": edge_ratio(recon, images_uint8)}
    if objects is not None:
        from minimodal.metrics import caption_fidelity

        out["recon_fidelity"] = caption_fidelity(recon, objects)
    return out


def evaluate(model, config: Config, tokenizer: Any, workdir: Any) -> dict[str, float]:
    del tokenizer, workdir
    n = 128 if config.n_train < 1000 else 2000
    examples = load_examples(config.data, "train", n=n, image_size=config.image_size, seed=config.seed + 10_007)
    objects = examples.get("objects")
    one_object = objects is not None and all(len(o) == 1 for o in objects)
    return reconstruction_metrics(model, examples["images"], objects if one_object else None)


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
                warm_start=warm_start, sample_grid=sample_grid, evaluate=evaluate, pipeline=pipeline,
                groups=(Group("discriminator", discriminator_loss_fn, discriminator_optimizer),),
                per_example_loss=False)
