"""DALL-E 2's diffusion prior: from a caption's CLIP text embedding to a CLIP *image* embedding.

CLIP's text and image embeddings of the same scene do not coincide (their cosine is far below 1), so a
decoder trained on image embeddings needs an image embedding at sampling time; the prior supplies one.
It is a diffusion over z = √E · (unit image embedding) (so each coordinate has about unit variance):

    train   z_t = √ᾱ_t z_0 + √(1 - ᾱ_t) ε;   minimise ‖f(z_t, t, y, tokens) - z_0‖²     (Ramesh et al. predict z_0)
            with (y, tokens) -> (0, ∅) with probability `text_drop`, for classifier-free guidance
    f       a pre-LN transformer over [caption tokens (T), W_y y, time(t), W_z z_t, query]; the query's output
            -> LayerNorm -> linear = ẑ_0 (E)
    sample  DDIM over `sample_steps` from z_T ~ N(0, I); `candidates` draws per caption, keeping the one
            whose direction is closest to y (the paper keeps the better of 2); the result is L2-normalised.

Legend: B batch, T caption tokens, E embedding width (CLIP's), W the prior's width, S = T + 4 positions.
Trained by `minimodal train unclip` (its `prepare`) in WORKDIR/prior; a family of its own so the one
trainer, checkpoints and `minimodal.train.load_model` serve it like any model.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from minimodal import diffusion
from minimodal.config import TrainConfig
from minimodal.ddpm import null_tokens
from minimodal.nn import Transformer
from minimodal.nn.unet import timestep_embedding
from minimodal.tokenizer import PAD_ID
from minimodal.train import Family


@dataclasses.dataclass(frozen=True)
class Config(TrainConfig):
    """The prior of `minimodal train unclip` (its data keys and embed_dim are set from the unCLIP run)."""

    steps: int = 1500
    batch_size: int = 128
    lr: float = 1e-3
    warmup_steps: int = 100
    ema_decay: float = 0.999
    context_length: int = 16
    log_every: int = 100
    checkpoint_every: int = 500
    embed_dim: int = 64  # E: the CLIP's joint embedding width
    width: int = 128
    depth: int = 3
    heads: int = 4
    schedule: str = "cosine"
    diffusion_steps: int = 100
    text_drop: float = 0.1  # P((y, tokens) -> (0, ∅)) in training
    # sampling defaults
    sample_steps: int = 25
    guidance: float = 1.0
    candidates: int = 2

    sampling_keys: ClassVar[frozenset[str]] = frozenset({"sample_steps", "guidance", "candidates"})

    def __post_init__(self):
        if not 0.0 <= self.text_drop <= 1.0:
            raise ValueError(f"text_drop must be a probability, got {self.text_drop}")
        if self.width % self.heads:
            raise ValueError(f"width={self.width} must divide by heads={self.heads}")


PRESETS: dict[str, Config] = {
    "default": Config(),
    "tiny": Config(steps=20, batch_size=16, width=32, depth=1, heads=2, diffusion_steps=20, sample_steps=4,
                   warmup_steps=2, log_every=5, checkpoint_every=20),
    "gpu": Config(steps=20_000, batch_size=1024, width=512, depth=8, heads=8, diffusion_steps=1000,
                  sample_steps=64, context_length=32),
}


class Prior(nnx.Module):
    """f(z_t, t, y, tokens) -> ẑ_0 (B, E): a transformer read out at a learned query position."""

    def __init__(self, config: Config, vocab_size: int, rngs: nnx.Rngs):
        W, E = config.width, config.embed_dim
        self.config = config
        self.token_VW = nnx.Param(0.02 * jax.random.normal(rngs.params(), (vocab_size, W)))
        self.pos_SW = nnx.Param(0.02 * jax.random.normal(rngs.params(), (config.context_length + 4, W)))
        self.query_W = nnx.Param(0.02 * jax.random.normal(rngs.params(), (W,)))
        self.text_in, self.z_in = nnx.Linear(E, W, rngs=rngs), nnx.Linear(E, W, rngs=rngs)
        self.time_mlp = nnx.Sequential(nnx.Linear(W, W, rngs=rngs), nnx.silu, nnx.Linear(W, W, rngs=rngs))
        self.transformer = Transformer(W, config.depth, config.heads, rngs=rngs)
        self.out_norm = nnx.LayerNorm(W, rngs=rngs)
        self.out = nnx.Linear(W, E, rngs=rngs)

    def __call__(self, z_BE: jax.Array, t_B: jax.Array, text_BE: jax.Array, tokens_BT: jax.Array) -> jax.Array:
        B, T = tokens_BT.shape
        W = self.config.width
        x_BSW = jnp.concatenate([
            self.token_VW[...][tokens_BT],
            self.text_in(text_BE)[:, None],
            self.time_mlp(timestep_embedding(t_B, W))[:, None],
            self.z_in(z_BE)[:, None],
            jnp.broadcast_to(self.query_W[...], (B, 1, W)),
        ], axis=1) + self.pos_SW[...][:T + 4]
        keep_BS = jnp.concatenate([tokens_BT != PAD_ID, jnp.ones((B, 4), bool)], axis=1)  # padding is no key
        h_BSW = self.transformer(x_BSW, mask=keep_BS[:, None, None, :])
        return self.out(self.out_norm(h_BSW[:, -1]))


def schedule(config: Config) -> diffusion.Schedule:
    return diffusion.make_schedule(config.schedule, config.diffusion_steps)


def build(config: Config, tokenizer: Any, rngs: nnx.Rngs) -> Prior:
    return Prior(config, tokenizer.vocab_size, rngs)


def loss_fn(model: Prior, batch: dict[str, jax.Array], rng: jax.Array):
    """‖ẑ_0 - z_0‖² (mean over E) with z_0 = √E · image_emb; (y, tokens) dropped with `text_drop`."""
    config = model.config
    drop_key, loss_key = jax.random.split(rng)
    B, T = batch["tokens"].shape
    drop_B = jax.random.bernoulli(drop_key, config.text_drop, (B,))
    tokens_BT = jnp.where(drop_B[:, None], jnp.asarray(null_tokens(1, T)), batch["tokens"])
    text_BE = jnp.where(drop_B[:, None], 0.0, batch["text_emb"])
    z0_BE = np.sqrt(config.embed_dim) * batch["image_emb"]
    loss = diffusion.simple_loss(schedule(config), "x0", lambda z, t: model(z, t, text_BE, tokens_BT), z0_BE,
                                 loss_key)
    return loss, {}


@functools.partial(jax.jit, static_argnames=("graphdef", "steps", "candidates"))
def _draws(graphdef, state, text_BE, tokens_BT, key, guidance, *, steps: int, candidates: int):
    """`candidates` DDIM draws per caption, L2-normalised: (B, C, E); one compiled loop for all B·C."""
    model = nnx.merge(graphdef, state)
    B, E = text_BE.shape
    text_XE, tokens_XT = jnp.repeat(text_BE, candidates, 0), jnp.repeat(tokens_BT, candidates, 0)  # X = B·C
    null = (jnp.zeros_like(text_XE), jnp.asarray(null_tokens(*tokens_XT.shape)))
    model_fn = lambda z, t: diffusion.guided(  # noqa: E731
        lambda zz, tt, c: model(zz, tt, *c), z, t, (text_XE, tokens_XT), null, guidance)
    noise_key, loop_key = jax.random.split(key)
    z_XE = diffusion.ddim_sample(schedule(model.config), "x0", model_fn,
                                 jax.random.normal(noise_key, (B * candidates, E)), loop_key, steps=steps, clip=False)
    z_BCE = z_XE.reshape(B, candidates, E)
    return z_BCE / jnp.linalg.norm(z_BCE, axis=-1, keepdims=True)


def draws(model: Prior, text_BE: np.ndarray, tokens_BT: np.ndarray, key: jax.Array, *, steps: int | None = None,
          guidance: float | None = None, candidates: int | None = None) -> np.ndarray:
    """`candidates` unit image embeddings per caption, float32 (B, C, E), for text embeddings (B, E) and
    their tokens (B, T)."""
    config = model.config
    steps = config.sample_steps if steps is None else steps
    candidates = config.candidates if candidates is None else candidates
    guidance = config.guidance if guidance is None else guidance
    if not 1 <= steps <= config.diffusion_steps:
        raise ValueError(f"prior steps must be in [1, {config.diffusion_steps}], got {steps}")
    if candidates < 1 or guidance < 0:
        raise ValueError(f"prior candidates must be >= 1 and guidance >= 0, got {candidates} and {guidance}")
    graphdef, state = nnx.split(model)
    return np.asarray(_draws(graphdef, state, jnp.asarray(text_BE, jnp.float32), jnp.asarray(tokens_BT, jnp.int32),
                             key, jnp.float32(guidance), steps=steps, candidates=candidates))


def sample(model: Prior, text_BE: np.ndarray, tokens_BT: np.ndarray, key: jax.Array, **options) -> np.ndarray:
    """Unit CLIP image embeddings (B, E): of each caption's `draws`, the one nearest its text embedding y."""
    z_BCE = draws(model, text_BE, tokens_BT, key, **options)
    best_B = np.argmax(np.einsum("bce,be->bc", z_BCE, text_BE), axis=1)
    return z_BCE[np.arange(len(z_BCE)), best_B]


FAMILY = Family(name="unclip_prior", config_class=Config, presets=PRESETS, build=build, loss_fn=loss_fn)
