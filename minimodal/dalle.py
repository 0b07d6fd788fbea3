"""DALL-E 1: one decoder-only transformer over [caption tokens ; image tokens].

Legend: B batch, T text tokens (fixed, padded), N image tokens (= h·w), D width, V vocabulary,
h w token grid, L cache length.

An image tokenizer (`minimodal.vqvae`) turns a picture into h × w codes; the caption (the one BPE
tokenizer, padded to T) and the codes, read row by row, form one stream of T + N tokens, modelled
autoregressively:  p(text, image) = Π_t p(text_t | text_<t) · Π_n p(image_n | text, image_<n).
Text and image tokens have separate embeddings and output heads; text gets 1-D learned positions, image
token n = (r, c) gets row_r + col_c. Stream position T-1+n predicts image token n, so the input is
[text ; image[:-1]] (T + N - 1 positions) under one causal mask.
Loss = w_text · CE(text) + (1 - w_text) · CE(image), with w_text = 1/8 as in DALL-E.

Sampling draws the N image tokens one at a time with a KV cache inside one compiled `lax.fori_loop`;
logits go through temperature, top-k and top-p filters. Classifier-free guidance (caption dropout at
training, replacing the caption with the empty one) mixes the two predictions at sampling:
    logits = logits(∅) + s · (logits(caption) - logits(∅))     (s = 1: the conditional model).
CLIP reranking draws several candidates per prompt and keeps the one CLIP scores highest.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from pathlib import Path
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from minimodal import clip, vqvae
from minimodal.config import TrainConfig, checked_options, override
from minimodal.data import load_examples
from minimodal.nn.attention import causal_mask
from minimodal.nn.transformer import Transformer
from minimodal.tokenizer import BOS_ID, EOS_ID, PAD_ID
from minimodal.train import Family, fit, load_model


@dataclasses.dataclass(frozen=True)
class Config(TrainConfig):
    """DALL-E config: the transformer, its loss and sampling defaults, and which image tokenizer to use."""

    context_length: int = 16  # T: caption tokens, BOS and EOS included (padded)
    # image tokenizer: a trained `minimodal train vqvae` work directory, or "" to train one into
    # WORKDIR/image_tokenizer with the `tokenizer_preset` of minimodal.vqvae (and this run's data keys)
    image_tokenizer: str = ""
    tokenizer_preset: str = "default"
    # must equal the image tokenizer's codebook size; 128 codes reconstruct shapes as well as 512 (31.6 dB) and the
    # transformer learns them faster (bench/results/dalle.md, "Codebook size")
    image_vocab_size: int = 128
    downsample: int = 4  # pixels per token side; must equal the image tokenizer's (grid = image_size / this)
    # transformer
    dim: int = 128
    depth: int = 4
    num_heads: int = 4
    # a learned bias per head on the attention between two image tokens, by their offset on the grid (Δrow, Δcol);
    # off: it lowered the loss but drew no better crosses (bench/results/dalle.md, "Crosses, again")
    relative_bias: bool = False
    text_loss_weight: float = 1 / 8  # DALL-E's 1/8 : 7/8 split between text and image tokens
    caption_dropout: float = 0.0  # probability of training on the empty caption (enables guidance)
    # sampling defaults (pipeline.generate / evaluate)
    temperature: float = 0.7  # < 1 sharpens; with top-k 8 the best of a sweep (bench/results/dalle.md)
    top_k: int = 8  # 0 = no top-k filter
    top_p: float = 1.0  # 1 = no nucleus filter
    guidance: float = 1.0  # 1 = plain conditional sampling
    eval_guidance: float = 3.0  # the scale `evaluate` also reports when the model saw caption dropout
    eval_n: int = 240  # prompts per evaluation set
    candidates: int = 8  # CLIP reranking: samples drawn per prompt, the one CLIP scores highest kept (1: plain)
    # the CLIP that reranks: a trained CLIP's work directory, or "auto" (WORKDIR/clip, where CLIP's `clip_preset`
    # is trained first on this run's data); "": plain sampling unless `generate` is given `rerank_with`
    clip_workdir: str = ""
    clip_preset: str = "default"  # CLIP's default: 32 px, 400 steps, ~2 min on a 2-core CPU
    # training: batch 32 runs 13% more sequences per second on the CPU than 64, so more, smaller steps;
    # lr 4e-3 from an 800-step sweep over 1e-3 .. 8e-3 (1e-3 ended 7 points lower; bench/results/dalle.md)
    n_train: int = 40_000
    steps: int = 3000
    batch_size: int = 32
    lr: float = 4e-3
    warmup_steps: int = 100
    weight_decay: float = 0.01

    sampling_keys: ClassVar[frozenset[str]] = frozenset(
        {"temperature", "top_k", "top_p", "guidance", "eval_guidance", "eval_n", "candidates", "clip_workdir"})

    def __post_init__(self):
        if not 0 <= self.caption_dropout < 1:
            raise ValueError(f"caption_dropout must be in [0, 1), got {self.caption_dropout}")
        if not 0 <= self.text_loss_weight <= 1:
            raise ValueError(f"text_loss_weight must be in [0, 1], got {self.text_loss_weight}")
        if self.dim % self.num_heads:
            raise ValueError(f"dim={self.dim} must be divisible by num_heads={self.num_heads}")
        if self.clip_workdir == "auto" and self.clip_preset not in clip.PRESETS:
            raise ValueError(f"clip_preset={self.clip_preset!r}; choose one of {', '.join(clip.PRESETS)}")

    @property
    def grid(self) -> int:
        """h = w: the token grid side."""
        return self.image_size // self.downsample


PRESETS: dict[str, Config] = {
    # 4000 steps in four slices of 8: with huge pages the transformer and its tokenizer take 11.8 min, as 3000
    # steps took before (bench/results/dalle.md, "Crosses, again"); then the best of 8 by a CLIP trained beside it
    # (DALL-E's own recipe): typed prompts 90.9% -> 96.5%, crosses 76% -> 93% (bench/results/dalle.md, "Reranking")
    "default": Config(steps=4000, micro_batches=4, clip_workdir="auto"),
    "tiny": Config(dim=32, depth=2, num_heads=2, steps=20, batch_size=16, n_train=256, image_vocab_size=32,
                   tokenizer_preset="tiny", log_every=5, checkpoint_every=20, warmup_steps=5, eval_n=16,
                   candidates=2),
    # the full tour's (one core, beside the DDPM): the default's 4000-step tokenizer, whose clean codes crosses need
    # (with 1200 steps the tour read crosses 32.5%, now 72.5%); four slices per step win back part of its time
    # (README, "The tour")
    "tour": Config(steps=2600, micro_batches=4),
    # 16 px: 16 image tokens; 2400 steps since the fast tour trains DALL-E beside the DDPM (README, "The tour")
    "fast": Config(image_size=16, steps=2400, n_train=20_000, tokenizer_preset="fast"),
    "guided": Config(caption_dropout=0.1),
    # 16 px in 2×2-pixel tokens (8×8 = 64 tokens, 128 codes): crosses right 80% of the time, but held-out pairs
    # mostly wrong, 23% (bench/results/dalle.md, "Fine tokens")
    "fine": Config(image_size=16, downsample=2, tokenizer_preset="fine"),
    # natural images (CIFAR, COCO) need more codes than flat shapes: 512
    "gpu": Config(dim=512, depth=8, num_heads=8, steps=10_000, batch_size=256, n_train=50_000, lr=1e-3,
                  tokenizer_preset="gpu", caption_dropout=0.1, image_vocab_size=512),
}


# -------------------------------------------------------------------------------------------- model
class DalleTransformer(nnx.Module):
    """Embeddings for both vocabularies, a causal transformer over the joint stream, two output heads."""

    def __init__(self, c: Config, text_vocab: int, *, rngs: nnx.Rngs):
        self.config = c  # static (a frozen dataclass): read by `family_loss_fn`
        self.text_len, self.grid, self.image_vocab = c.context_length, c.grid, c.image_vocab_size
        init = nnx.initializers.normal(0.02)
        self.text_embed = nnx.Embed(text_vocab, c.dim, embedding_init=init, rngs=rngs)
        self.image_embed = nnx.Embed(c.image_vocab_size, c.dim, embedding_init=init, rngs=rngs)
        self.text_pos = nnx.Param(init(rngs.params(), (c.context_length, c.dim)))
        self.row_pos = nnx.Param(init(rngs.params(), (c.grid, c.dim)))
        self.col_pos = nnx.Param(init(rngs.params(), (c.grid, c.dim)))
        # b[h, Δr, Δc] flattened over the (2h-1) × (2w-1) offsets; zero: starts as the model without it
        self.relative_bias = (nnx.Param(jnp.zeros((c.num_heads, (2 * c.grid - 1) ** 2))) if c.relative_bias
                              else None)
        self.transformer = Transformer(c.dim, c.depth, c.num_heads, rngs=rngs)
        self.text_head = nnx.Linear(c.dim, text_vocab, rngs=rngs)
        self.image_head = nnx.Linear(c.dim, c.image_vocab_size, rngs=rngs)

    @property
    def num_image_tokens(self) -> int:
        return self.grid * self.grid

    def image_positions(self) -> jax.Array:
        """(N, D): token n = (r, c) in row-major order gets row_r + col_c."""
        row_hD, col_wD = self.row_pos[...], self.col_pos[...]
        return (row_hD[:, None, :] + col_wD[None, :, :]).reshape(-1, row_hD.shape[-1])

    def attention_bias(self, S: int) -> jax.Array | None:
        """(H, S, S) bias of stream position s attending to s': b[h, r - r', c - c'] when both hold image tokens
        (token n = (r, c) sits at position T + n), 0 otherwise; None without `relative_bias`. "Look at the
        token just above" is then one number per head, the same at every position of the grid."""
        if self.relative_bias is None:
            return None
        g = self.grid
        n_S = np.arange(S) - self.text_len  # the image token at each position (< 0: a text position)
        row_S, col_S = n_S // g, n_S % g
        offset_SS = (row_S[:, None] - row_S[None, :] + g - 1) * (2 * g - 1) + col_S[:, None] - col_S[None, :] + g - 1
        both_image_SS = (n_S[:, None] >= 0) & (n_S[None, :] >= 0)
        return jnp.where(both_image_SS, self.relative_bias[...][:, np.where(both_image_SS, offset_SS, 0)], 0.0)

    def embed_text(self, text_BT: jax.Array) -> jax.Array:
        return self.text_embed(text_BT) + self.text_pos[...][: text_BT.shape[1]]  # (B, T, D)

    def embed_image(self, image_BN: jax.Array, start: Any = 0) -> jax.Array:
        """Embeddings of image tokens at grid indices [start, start + N) (start may be traced)."""
        pos_ND = jax.lax.dynamic_slice_in_dim(self.image_positions(), start, image_BN.shape[1])
        return self.image_embed(image_BN) + pos_ND  # (B, N, D)

    def __call__(self, text_BT: jax.Array, image_BN: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Teacher-forced logits: text (B, T-1, V_text) for text[1:], image (B, N, V_image) for image."""
        T = text_BT.shape[1]
        x_BSD = jnp.concatenate([self.embed_text(text_BT), self.embed_image(image_BN[:, :-1])], axis=1)
        S = x_BSD.shape[1]
        y_BSD = self.transformer(x_BSD, mask=causal_mask(S), bias=self.attention_bias(S))
        return self.text_head(y_BSD[:, : T - 1]), self.image_head(y_BSD[:, T - 1:])


def stream_mask(text_len: int, num_image_tokens: int) -> np.ndarray:
    """bool (S, S), S = T + N - 1: the causal mask of the joint stream (the picture the lesson draws)."""
    return np.asarray(causal_mask(text_len + num_image_tokens - 1))


# --------------------------------------------------------------------------------------------- loss
def empty_caption(T: int) -> jax.Array:
    """The tokens of the empty caption "": BOS EOS PAD ... (T,), the unconditional input for guidance."""
    return jnp.zeros((T,), jnp.int32).at[0].set(BOS_ID).at[1].set(EOS_ID)


def cross_entropy(logits_BSV: jax.Array, targets_BS: jax.Array) -> jax.Array:
    """-log softmax(logits)[target] per position: (B, S)."""
    logp_BSV = jax.nn.log_softmax(logits_BSV.astype(jnp.float32), axis=-1)
    return -jnp.take_along_axis(logp_BSV, targets_BS[..., None], axis=-1)[..., 0]


def weighted_loss(text_logits_BTV, text_targets_BT, image_logits_BNV, image_targets_BN, text_weight):
    """w · mean CE over non-PAD text targets + (1 - w) · mean CE over image tokens; returns (loss, parts)."""
    keep_BT = (text_targets_BT != PAD_ID).astype(jnp.float32)
    ce_text = jnp.sum(cross_entropy(text_logits_BTV, text_targets_BT) * keep_BT) / jnp.maximum(keep_BT.sum(), 1)
    ce_image = jnp.mean(cross_entropy(image_logits_BNV, image_targets_BN))
    return text_weight * ce_text + (1 - text_weight) * ce_image, (ce_text, ce_image)


def loss_fn(model: DalleTransformer, batch: dict[str, Any], rng: jax.Array, *, caption_dropout: float = 0.0,
            text_weight: float = 1 / 8):
    """Weighted next-token cross-entropy of the joint stream; a `caption_dropout` fraction of the
    captions is replaced by the empty caption (the unconditional model used by guidance)."""
    text_BT = batch["tokens"]
    B, T = text_BT.shape
    image_BN = batch["image_tokens"].reshape(B, -1)
    if caption_dropout > 0:
        drop_B = jax.random.bernoulli(rng, caption_dropout, (B,))
        text_BT = jnp.where(drop_B[:, None], empty_caption(T)[None], text_BT)
    text_logits, image_logits = model(text_BT, image_BN)
    loss, (ce_text, ce_image) = weighted_loss(text_logits, text_BT[:, 1:], image_logits, image_BN, text_weight)
    return loss, {"ce_text": ce_text, "ce_image": ce_image}


def family_loss_fn(model, batch, rng):
    c = model.config
    return loss_fn(model, batch, rng, caption_dropout=c.caption_dropout, text_weight=c.text_loss_weight)


# ----------------------------------------------------------------------------------------- sampling
def top_k_filter(logits_BV: jax.Array, k: int) -> jax.Array:
    """Keep the k largest logits per row (ties with the k-th kept too), the rest -> -inf; k <= 0 keeps all.
    k is a Python int (it sets a shape)."""
    if k <= 0:
        return logits_BV
    kth_B1 = jax.lax.top_k(logits_BV, min(k, logits_BV.shape[-1]))[0][:, -1:]
    return jnp.where(logits_BV >= kth_B1, logits_BV, -jnp.inf)


def top_p_filter(logits_BV: jax.Array, p: float) -> jax.Array:
    """Nucleus filter: keep the smallest set of most likely tokens whose probability reaches p.

    A token is kept iff the probability of the tokens strictly more likely than it is < p (so the most
    likely token always stays); p >= 1 keeps all."""
    if p >= 1:
        return logits_BV
    order_BV = jnp.argsort(-logits_BV, axis=-1)
    probs_BV = jax.nn.softmax(jnp.take_along_axis(logits_BV, order_BV, -1), axis=-1)
    before_BV = jnp.cumsum(probs_BV, axis=-1) - probs_BV  # mass of the more likely tokens
    keep_sorted_BV = before_BV < p
    keep_BV = jnp.zeros_like(keep_sorted_BV).at[jnp.arange(logits_BV.shape[0])[:, None], order_BV].set(
        keep_sorted_BV)
    return jnp.where(keep_BV, logits_BV, -jnp.inf)


def sample_logits(rng: jax.Array, logits_BV: jax.Array, temperature, top_k: int, top_p: float) -> jax.Array:
    """One token per row from softmax(filter(logits / temperature)) -> int32 (B,). top_k and top_p are
    Python numbers: an inactive filter (k = 0, p = 1) is left out of the compiled step, not run as a no-op
    (on a CPU the two sorts cost more than the rest of a cached decoding step)."""
    logits_BV = top_p_filter(top_k_filter(logits_BV.astype(jnp.float32) / temperature, top_k), top_p)
    return jax.random.categorical(rng, logits_BV, axis=-1).astype(jnp.int32)


def guide(logits_2BV: jax.Array, scale) -> jax.Array:
    """Classifier-free guidance on a stacked [conditional ; unconditional] batch -> (B, V):
    logits(∅) + s · (logits(c) - logits(∅)), written as logits(c) + (s - 1)(logits(c) - logits(∅))
    so that s = 1 returns the conditional logits exactly."""
    cond_BV, uncond_BV = jnp.split(logits_2BV, 2, axis=0)
    return cond_BV + (scale - 1) * (cond_BV - uncond_BV)


def _with_uncond(text_BT: jax.Array) -> jax.Array:
    """[text ; empty captions]: (2B, T)."""
    B, T = text_BT.shape
    return jnp.concatenate([text_BT, jnp.broadcast_to(empty_caption(T), (B, T))], axis=0)


def sample_tokens_cached(model: DalleTransformer, text_BT: jax.Array, rng: jax.Array, temperature=1.0,
                         top_k=0, top_p=1.0, guidance=1.0, *, guided: bool = False) -> jax.Array:
    """Image tokens int32 (B, N), one per step, reusing each layer's cached keys/values.

    Prefill the T caption positions, then N - 1 steps of one token; token n is drawn with key
    fold_in(rng, n). `guided` (static) runs the unconditional batch alongside for guidance."""
    x_text = _with_uncond(text_BT) if guided else text_BT
    B, T = text_BT.shape
    N = model.num_image_tokens
    cache = model.transformer.init_cache(x_text.shape[0], T + N - 1)
    bias_HLL = model.attention_bias(T + N - 1)
    rows = lambda start, size: None if bias_HLL is None else jax.lax.dynamic_slice_in_dim(  # noqa: E731
        bias_HLL, start, size, axis=1)
    y_BTD, cache = model.transformer.decode(model.embed_text(x_text), cache, 0, bias=rows(0, T))
    logits_XV = model.image_head(y_BTD[:, -1])

    def draw(n, logits_XV):
        logits_BV = guide(logits_XV, guidance) if guided else logits_XV
        return sample_logits(jax.random.fold_in(rng, n), logits_BV, temperature, top_k, top_p)

    def step(n, carry):
        image_BN, logits_XV, cache = carry
        tok_B = draw(n, logits_XV)
        image_BN = image_BN.at[:, n].set(tok_B)
        tok_X1 = jnp.concatenate([tok_B, tok_B])[:, None] if guided else tok_B[:, None]
        y_X1D, cache = model.transformer.decode(model.embed_image(tok_X1, n), cache, T + n, bias=rows(T + n, 1))
        return image_BN, model.image_head(y_X1D[:, 0]), cache

    image_BN = jnp.zeros((B, N), jnp.int32)
    image_BN, logits_XV, _ = jax.lax.fori_loop(0, N - 1, step, (image_BN, logits_XV, cache))
    return image_BN.at[:, N - 1].set(draw(N - 1, logits_XV))


def sample_tokens_uncached(model: DalleTransformer, text_BT: jax.Array, rng: jax.Array, temperature=1.0,
                           top_k=0, top_p=1.0, guidance=1.0, *, guided: bool = False) -> jax.Array:
    """The same draws as `sample_tokens_cached` but recomputing the whole stream at every step
    (the baseline the KV cache is measured against)."""
    x_text = _with_uncond(text_BT) if guided else text_BT
    B, N = text_BT.shape[0], model.num_image_tokens

    def step(n, image_BN):
        image_XN = jnp.concatenate([image_BN, image_BN]) if guided else image_BN
        logits_XV = model(x_text, image_XN)[1][:, n]  # causal: depends on image[:n] only
        logits_BV = guide(logits_XV, guidance) if guided else logits_XV
        tok_B = sample_logits(jax.random.fold_in(rng, n), logits_BV, temperature, top_k, top_p)
        return image_BN.at[:, n].set(tok_B)

    return jax.lax.fori_loop(0, N, step, jnp.zeros((B, N), jnp.int32))


@functools.partial(jax.jit, static_argnames=("graphdef", "top_k", "top_p", "guided", "cached"))
def _sample_jit(graphdef, state, text_BT, rng, temperature, top_k, top_p, guidance, guided, cached):
    model = nnx.merge(graphdef, state)
    sampler = sample_tokens_cached if cached else sample_tokens_uncached
    return sampler(model, text_BT, rng, temperature, top_k, top_p, guidance, guided=guided)


def sample(model: DalleTransformer, text_BT, rng: jax.Array, *, temperature: float = 1.0, top_k: int = 0,
           top_p: float = 1.0, guidance: float = 1.0, cached: bool = True) -> jax.Array:
    """Compiled sampling of image tokens int32 (B, h, w) for caption tokens (B, T). top_k and top_p are
    compiled in (an inactive filter costs nothing), so each new value of either compiles the sampler once."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    graphdef, state = nnx.split(model)
    image_BN = _sample_jit(graphdef, state, jnp.asarray(text_BT, jnp.int32), rng, jnp.float32(temperature),
                           int(top_k), float(top_p), jnp.float32(guidance),
                           guided=guidance != 1.0, cached=cached)
    return image_BN.reshape(-1, model.grid, model.grid)


# ------------------------------------------------------------------------------ image tokenizer glue
def _tokenizer_config(config: Config) -> vqvae.Config:
    """The image tokenizer this run trains: the preset, with this run's data keys and codebook size."""
    if config.tokenizer_preset not in vqvae.PRESETS:
        raise ValueError(f"tokenizer_preset={config.tokenizer_preset!r} is not a vqvae preset; "
                         f"choose one of {', '.join(vqvae.PRESETS)}")
    return override(vqvae.PRESETS[config.tokenizer_preset], {
        "data": config.data, "image_size": config.image_size, "seed": config.seed,
        "n_train": config.n_train, "codebook_size": config.image_vocab_size, "downsample": config.downsample})


def image_tokenizer_dir(config: Config, workdir: str | Path) -> Path:
    return Path(config.image_tokenizer) if config.image_tokenizer else Path(workdir) / "image_tokenizer"


def load_image_tokenizer(config: Config, workdir: str | Path) -> vqvae.Pipeline:
    """The trained image tokenizer of a DALL-E run, checked against the run's config."""
    path = image_tokenizer_dir(config, workdir)
    if not path.exists():
        raise FileNotFoundError(f"no image tokenizer at {path}: train one with `minimodal train vqvae "
                                f"--workdir {path}` or let `minimodal train dalle` train it")
    family, model, tconfig, _ = load_model(path)
    if family.name != "vqvae":
        raise ValueError(f"{path} holds a {family.name!r} model, not an image tokenizer (vqvae)")
    if (model.codebook_size, tconfig.image_size, tconfig.downsample) != (
            config.image_vocab_size, config.image_size, config.downsample):
        raise ValueError(f"the image tokenizer at {path} has {model.codebook_size} codes for "
                         f"{tconfig.image_size} px images, {tconfig.downsample} px per token; this config wants "
                         f"image_vocab_size={config.image_vocab_size}, image_size={config.image_size}, "
                         f"downsample={config.downsample}")
    return vqvae.Pipeline(model, tconfig, path)


def prepare(config: Config, examples: dict[str, Any], tokenizer: Any, workdir: str | Path) -> dict[str, Any]:
    """Train (or load) the reranking CLIP (clip_workdir=auto) and the image tokenizer; add `image_tokens` int32
    (N, h, w) to the examples."""
    if config.clip_workdir == "auto":
        clip.train_for("clip_workdir=auto (CLIP reranks DALL-E's samples)",
                       clip.workdir_for(config.clip_workdir, workdir), config.clip_preset,
                       {"data": config.data, "seed": config.seed, "image_size": config.image_size})
    if not config.image_tokenizer:
        fit(vqvae.FAMILY, _tokenizer_config(config), Path(workdir) / "image_tokenizer",
            examples={k: v for k, v in examples.items() if k != "image_tokens"}, tokenizer=tokenizer)
    codes = load_image_tokenizer(config, workdir).encode(examples["images"])
    return {**examples, "image_tokens": codes}


def build(config: Config, tokenizer: Any, rngs: nnx.Rngs) -> DalleTransformer:
    return DalleTransformer(config, tokenizer.vocab_size, rngs=rngs)


# ------------------------------------------------------------------------------------ pipeline/eval
@dataclasses.dataclass
class Pipeline:
    """What `minimodal.load(workdir)` returns for DALL-E: `generate(prompts, seed, ...) -> uint8 images`."""

    model: DalleTransformer
    config: Config
    tokenizer: Any
    image_tokenizer: vqvae.Pipeline
    reranker: Any = None  # the run's own CLIP (`clip_workdir`), or None

    @checked_options
    def generate(self, prompts: list[str], seed: int = 0, *, temperature: float | None = None,
                 top_k: int | None = None, top_p: float | None = None, guidance: float | None = None,
                 rerank_with: Any = None, candidates: int | None = None) -> np.ndarray:
        """uint8 (len(prompts), H, W, 3). With a CLIP — `rerank_with` (a CLIP pipeline or work directory) or
        else the run's own (`clip_workdir`) — draws `candidates` images per prompt and keeps the one whose CLIP
        embedding is closest to the prompt's; without one, or with candidates=1, plain sampling."""
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts) or not prompts:
            raise ValueError("prompts must be a non-empty list of strings")
        if top_k is not None and top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0: no top-k filter), got {top_k}")
        if candidates is not None and candidates < 1:
            raise ValueError(f"candidates must be at least 1, got {candidates}")
        if guidance is not None and guidance < 0:
            raise ValueError(f"guidance must be >= 0, got {guidance}")
        c = self.config
        options = dict(temperature=c.temperature if temperature is None else temperature,
                       top_k=c.top_k if top_k is None else top_k, top_p=c.top_p if top_p is None else top_p,
                       guidance=c.guidance if guidance is None else guidance)
        if guidance not in (None, 1.0) and c.caption_dropout == 0:
            warnings.warn("guidance needs a model trained with caption_dropout > 0; this one was not")
        text_BT = self.tokenizer.encode_batch(list(prompts), c.context_length)
        clip_pipe, n = self.reranker if rerank_with is None else rerank_with, candidates or c.candidates
        if clip_pipe is None or n == 1:
            codes = sample(self.model, text_BT, jax.random.key(seed), **options)
            return self.image_tokenizer.decode(np.asarray(codes))
        return self._rerank(prompts, text_BT, seed, options, clip_pipe, n)

    def _rerank(self, prompts, text_BT, seed, options, clip_pipe, candidates: int) -> np.ndarray:
        if isinstance(clip_pipe, (str, Path)):
            from minimodal import load

            clip_pipe = load(clip_pipe)
        B = len(prompts)
        text_MT = np.repeat(text_BT, candidates, axis=0)  # M = B · candidates, prompt-major
        images_M = self.image_tokenizer.decode(np.asarray(
            sample(self.model, text_MT, jax.random.key(seed), **options)))
        img_MD = np.asarray(clip_pipe.embed_images(images_M)).reshape(B, candidates, -1)
        txt_BD = np.asarray(clip_pipe.embed_texts(list(prompts)))
        best_B = np.argmax(np.einsum("bcd,bd->bc", img_MD, txt_BD), axis=1)  # highest cosine similarity
        return images_M.reshape(B, candidates, *images_M.shape[1:])[np.arange(B), best_B]


def pipeline(model, config: Config, tokenizer: Any, workdir: str | Path) -> Pipeline:
    from minimodal import load

    path, reranker = clip.workdir_for(config.clip_workdir, workdir), None
    if path is not None:
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"no CLIP at {path} to rerank this DALL-E's samples: train one (`minimodal train "
                                    f"clip --data shapes --workdir {path}`), or pass clip_workdir= for plain sampling")
        reranker = load(path)
    return Pipeline(model, config, tokenizer, load_image_tokenizer(config, workdir), reranker)


def _prompts(config: Config, split: str, n: int) -> dict[str, Any]:
    """One-object shapes prompts (captions + objects) of a split, drawn apart from the training seed."""
    return load_examples("shapes", split, n=n, image_size=config.image_size, seed=config.seed + 977)


def evaluate(model, config: Config, tokenizer: Any, workdir: str | Path) -> dict[str, float]:
    """Caption fidelity (the exact shapes grader) on train-distribution and held-out full captions;
    then on prompts as people type them ("a red circle": `fidelity_typed`, per shape, held-out); each plainly
    sampled, with guidance (if trained with caption dropout: `_guided`) and with CLIP reranking (if
    `clip_workdir`: `_rerank`)."""
    from minimodal.metrics import caption_fidelity, typed_prompt_report

    if config.data.partition(":")[0] != "shapes":
        raise ValueError(f"caption fidelity needs the shapes grader; this model was trained on {config.data!r}")
    pipe = pipeline(model, config, tokenizer, workdir)
    runs = {"": {"candidates": 1}}
    if config.caption_dropout > 0:
        runs["_guided"] = {"guidance": config.eval_guidance, "candidates": 1}
    if pipe.reranker is not None:
        runs["_rerank"] = {}
    metrics = {}
    for split, name in (("train", "fidelity"), ("holdout", "fidelity_holdout")):
        prompts = _prompts(config, split, config.eval_n)
        for suffix, options in runs.items():
            images = pipe.generate(list(prompts["captions"]), seed=config.seed, **options)
            metrics[name + suffix] = float(caption_fidelity(images, prompts["objects"]))
    for suffix, options in runs.items():
        generate = functools.partial(pipe.generate, seed=config.seed, **options)
        metrics |= typed_prompt_report(generate, config.eval_n, config.seed + 10_000, suffix=suffix)
    return metrics


def sample_grid(model, config: Config, tokenizer: Any, rng: jax.Array, workdir: str | Path | None = None
                ) -> np.ndarray:
    """Sixteen samples for fixed prompts (colours and shapes in turn, held-out pairs included).

    Decoding needs the image tokenizer, found through `workdir` (or `config.image_tokenizer`); without
    either, the token grids themselves are drawn (code index as grey level, one 4×4 block per token)."""
    from minimodal.data import shapes

    colors = list(shapes.COLORS)
    prompts = [f"a {colors[i % len(colors)]} {shapes.SHAPES[i % len(shapes.SHAPES)]}" for i in range(16)]
    codes = np.asarray(sample(model, tokenizer.encode_batch(prompts, config.context_length), rng,
                              temperature=config.temperature, top_k=config.top_k, top_p=config.top_p))
    if workdir is not None or config.image_tokenizer:
        return load_image_tokenizer(config, workdir or ".").decode(codes)
    grey = np.rint(codes * 255.0 / max(config.image_vocab_size - 1, 1)).astype(np.uint8)
    return np.repeat(np.repeat(grey, 4, axis=1), 4, axis=2)[..., None].repeat(3, axis=-1)


FAMILY = Family(name="dalle", config_class=Config, presets=PRESETS, build=build, loss_fn=family_loss_fn,
                prepare=prepare, sample_grid=sample_grid, evaluate=evaluate, pipeline=pipeline)
