"""CLIP: a shared text–image embedding space learned contrastively (Radford et al. 2021).

Legend: B batch, T text tokens, N patches, D encoder width, E joint embedding width, C channels.

    x_i = normalize(W_img · ImageEncoder(image_i)),   y_j = normalize(W_txt · TextEncoder(text_j))
    logits_ij = s · x_i · y_j,   s = exp(log_s) clamped at 100, started at 1/0.07
    InfoNCE:  L = ½ [ -1/B Σ_i Σ_j R_ij log softmax_j(logits_ij)
                     - 1/B Σ_j Σ_i C_ij log softmax_i(logits_ij) ]
              over the global batch, with M_ij = 1 where caption j is a true description of image i,
              R = M / row sums, C = M / column sums (the target mass is shared by every true pair)
    SigLIP:   L = -1/B Σ_ij log σ(z_ij (s · x_i · y_j + b)),  z_ij = +1 where M_ij = 1, else -1

Which pairs are true (`targets`): "identity" (M = I, plain CLIP), "captions" (identical token rows) or
"attributes" (shapes: caption j names only attributes that image i has; "a red circle" is true of every
red circle in the batch, not only of its own image). Identical captions have identical embeddings, so
"captions" gives exactly the same loss as "identity"; the false negatives that change training are
the captions that are true of other images, which only "attributes" knows about.

The image encoder is a ViT (patches -> pre-LN transformer -> mean pool) or, with `encoder="conv"`, a
small ResNet (3×3 residual blocks, stride-2 stages, global average pool). The text encoder is a causal
transformer read out at the EOS token; it is reused by DDPM's text conditioning.
Zero-shot classification, retrieval, search and the linear probe live in `minimodal.clip_tasks`.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from minimodal.clip_tasks import (ClipPipeline, evaluate_pipeline, linear_probe, retrieval_recall, search,
                                  zero_shot)
from minimodal import distributed
from minimodal.config import TrainConfig, override
from minimodal.nn import GroupNorm, PatchEmbed, Transformer, causal_mask
from minimodal.train import Family, fit

MAX_SCALE = 100.0  # the logit scale s is clamped at 100 (CLIP)
TARGETS = ("identity", "captions", "attributes")


@dataclasses.dataclass(frozen=True)
class Config(TrainConfig):
    """CLIP on 32 px shapes by default: `minimodal train clip --data shapes`, 400 steps of 128 pairs. On the
    2-core CPU (one device per core) the whole command takes 104-111 s and reads ~100% 24-way zero-shot on fresh
    renders, 48-60% on held-out pairs (bench/results/clip.md, "One device per core")."""

    steps: int = 400
    batch_size: int = 128
    lr: float = 2e-3
    warmup_steps: int = 50
    weight_decay: float = 0.05
    context_length: int = 16
    log_every: int = 25
    checkpoint_every: int = 300
    # image encoder
    encoder: str = "vit"  # "vit" or "conv"
    patch: int = 4
    image_width: int = 96  # D of the ViT / channels of the conv encoder's last stage
    image_depth: int = 3  # transformer blocks / residual blocks per stage
    image_heads: int = 4
    # text encoder
    text_width: int = 96
    text_depth: int = 2
    text_heads: int = 4
    # joint space and loss
    embed_dim: int = 64
    loss: str = "infonce"  # "infonce" or "siglip"
    targets: str = "attributes"  # which pairs are positives: "identity", "captions" or "attributes"
    partial_captions: float = 0.0  # with "attributes": share of captions naming only colour or only shape

    def __post_init__(self):
        if self.encoder not in ("vit", "conv"):
            raise ValueError(f"encoder must be 'vit' or 'conv', got {self.encoder!r}")
        if self.loss not in ("infonce", "siglip"):
            raise ValueError(f"loss must be 'infonce' or 'siglip', got {self.loss!r}")
        if self.targets not in TARGETS:
            raise ValueError(f"targets must be one of {TARGETS}, got {self.targets!r}")
        if self.encoder == "vit" and self.image_size % self.patch:
            raise ValueError(f"image_size={self.image_size} must be divisible by patch={self.patch}")


PRESETS: dict[str, Config] = {
    "default": Config(),
    "tiny": Config(steps=30, batch_size=32, n_train=512, image_width=32, image_depth=1, image_heads=2,
                   text_width=32, text_depth=1, text_heads=2, embed_dim=16, warmup_steps=5, log_every=10,
                   checkpoint_every=30, patch=8),
    "tour": Config(steps=300),
    # the fast tour's: 16 px, so the ViT sees 16 patches instead of 64 (99.7% zero-shot in about a minute; README)
    "fast": Config(image_size=16, steps=300),
    "gpu": Config(steps=3000, batch_size=512, lr=1e-3, warmup_steps=200, n_train=50_000, context_length=32,
                  image_width=256, image_depth=6, image_heads=8, text_width=256, text_depth=4, text_heads=8,
                  embed_dim=256, log_every=100, checkpoint_every=1000),
}


def _normal(rngs: nnx.Rngs, shape: Sequence[int], std: float = 0.02) -> nnx.Param:
    return nnx.Param(std * jax.random.normal(rngs.params(), shape))


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-6) -> jax.Array:
    """x / max(‖x‖, eps) along `axis`."""
    return x / jnp.maximum(jnp.linalg.norm(x, axis=axis, keepdims=True), eps)


class ViT(nnx.Module):
    """Patch embedding + learned positions -> pre-LN transformer -> mean over patches: (B, D)."""

    def __init__(self, image_size: int, patch: int, dim: int, depth: int, num_heads: int, *, rngs: nnx.Rngs):
        self.patch_embed = PatchEmbed(patch, 3, dim, rngs)
        self.pos_ND = _normal(rngs, ((image_size // patch) ** 2, dim))
        self.transformer = Transformer(dim, depth, num_heads, rngs=rngs)

    def __call__(self, images_BHWC: jax.Array) -> jax.Array:
        x_BND = self.patch_embed(images_BHWC) + self.pos_ND[...]
        return self.transformer(x_BND).mean(axis=1)


class ResBlock(nnx.Module):
    """x + Conv(ReLU(GN(Conv(ReLU(GN(x))))))  (pre-activation residual block, 3×3 convolutions)."""

    def __init__(self, channels: int, *, rngs: nnx.Rngs):
        self.norm1 = GroupNorm(channels, min(8, channels))
        self.conv1 = nnx.Conv(channels, channels, (3, 3), rngs=rngs)
        self.norm2 = GroupNorm(channels, min(8, channels))
        self.conv2 = nnx.Conv(channels, channels, (3, 3), rngs=rngs)

    def __call__(self, x_BHWC: jax.Array) -> jax.Array:
        h_BHWC = self.conv1(jax.nn.relu(self.norm1(x_BHWC)))
        return x_BHWC + self.conv2(jax.nn.relu(self.norm2(h_BHWC)))


class ConvEncoder(nnx.Module):
    """A small ResNet: 3×3 stem, three stages (widths D/4, D/2, D) of `depth` residual blocks with a
    stride-2 convolution between stages, then global average pooling: (B, D)."""

    def __init__(self, dim: int, depth: int, *, rngs: nnx.Rngs):
        widths = (dim // 4, dim // 2, dim)
        self.stem = nnx.Conv(3, widths[0], (3, 3), rngs=rngs)
        self.stages = nnx.List([nnx.List([ResBlock(w, rngs=rngs) for _ in range(depth)]) for w in widths])
        self.downs = nnx.List([nnx.Conv(a, b, (3, 3), strides=2, rngs=rngs)
                               for a, b in zip(widths, widths[1:])])
        self.norm = GroupNorm(dim, min(8, dim))

    def __call__(self, images_BHWC: jax.Array) -> jax.Array:
        x_BHWC = self.stem(images_BHWC)
        for i, stage in enumerate(self.stages):
            if i > 0:
                x_BHWC = self.downs[i - 1](x_BHWC)
            for block in stage:
                x_BHWC = block(x_BHWC)
        return jax.nn.relu(self.norm(x_BHWC)).mean(axis=(1, 2))


class TextEncoder(nnx.Module):
    """Token + position embeddings -> causal pre-LN transformer; pooled at the (first) EOS token.

    `TextEncoder(tokens_BT) -> (features_BTD, pooled_BD)`. Tokens are `BOS ids EOS PAD...`; with the
    causal mask no position before EOS sees the padding, so `pooled_BD` does not depend on it.
    Positions after EOS (padding) in `features_BTD` carry no meaning: mask them with `tokens != pad_id`.
    """

    def __init__(self, vocab_size: int, context_length: int, dim: int, depth: int, num_heads: int, *,
                 eos_id: int = 2, rngs: nnx.Rngs):
        self.eos_id, self.context_length = eos_id, context_length
        self.token_VD = _normal(rngs, (vocab_size, dim))
        self.pos_TD = _normal(rngs, (context_length, dim))
        self.transformer = Transformer(dim, depth, num_heads, rngs=rngs)

    def __call__(self, tokens_BT: jax.Array) -> tuple[jax.Array, jax.Array]:
        B, T = tokens_BT.shape
        if T > self.context_length:
            raise ValueError(f"got {T} tokens per text; this TextEncoder was built for at most "
                             f"{self.context_length}")
        x_BTD = self.token_VD[...][tokens_BT] + self.pos_TD[...][:T]
        features_BTD = self.transformer(x_BTD, mask=causal_mask(T))
        eos_B = jnp.argmax(tokens_BT == self.eos_id, axis=1)  # first EOS (0 if a row has none)
        return features_BTD, features_BTD[jnp.arange(B), eos_B]


class CLIP(nnx.Module):
    """Image and text encoders, linear projections to E dims, the logit scale (and SigLIP's bias)."""

    def __init__(self, config: Config, vocab_size: int, *, eos_id: int = 2, rngs: nnx.Rngs):
        c = config
        if c.encoder == "vit":
            self.image_encoder = ViT(c.image_size, c.patch, c.image_width, c.image_depth, c.image_heads,
                                     rngs=rngs)
        else:
            self.image_encoder = ConvEncoder(c.image_width, c.image_depth, rngs=rngs)
        self.text_encoder = TextEncoder(vocab_size, c.context_length, c.text_width, c.text_depth, c.text_heads,
                                        eos_id=eos_id, rngs=rngs)
        self.image_proj = nnx.Linear(c.image_width, c.embed_dim, use_bias=False, rngs=rngs)
        self.text_proj = nnx.Linear(c.text_width, c.embed_dim, use_bias=False, rngs=rngs)
        # CLIP starts s at 1/0.07; SigLIP starts s at 10 with bias b = -10 (most pairs are negatives)
        log_scale = math.log(10.0 if c.loss == "siglip" else 1 / 0.07)
        self.log_scale = nnx.Param(jnp.asarray(log_scale, jnp.float32))  # strong float32: no recompiles
        self.bias = nnx.Param(jnp.asarray(-10.0, jnp.float32)) if c.loss == "siglip" else None
        self.loss_kind, self.targets = c.loss, c.targets

    def scale(self) -> jax.Array:
        """s = exp(min(log_s, log 100))."""
        return jnp.exp(jnp.minimum(self.log_scale[...], math.log(MAX_SCALE)))

    def encode_images(self, images_BHWC: jax.Array) -> jax.Array:
        """float images in [-1, 1] -> L2-normalised embeddings (B, E)."""
        return l2_normalize(self.image_proj(self.image_encoder(images_BHWC)))

    def encode_texts(self, tokens_BT: jax.Array) -> jax.Array:
        """token ids (B, T) -> L2-normalised embeddings (B, E)."""
        return l2_normalize(self.text_proj(self.text_encoder(tokens_BT)[1]))


# ----------------------------------------------------------------------------- losses


def positives(batch: dict[str, Any], targets: str = "attributes") -> jax.Array:
    """M (B, B): M_ij = 1 where caption j truly describes image i (always on the diagonal).

    "identity": M = I; "captions": identical token rows; "attributes": caption j names no attribute
    that image i lacks (needs the batch's `image_attributes` / `caption_attributes` from `prepare`;
    falls back to "captions" without them).
    """
    tokens_BT = batch["tokens"]
    if targets == "identity":
        return jnp.eye(tokens_BT.shape[0])
    if targets == "attributes" and "caption_attributes" in batch:
        image_BA, caption_BA = batch["image_attributes"], batch["caption_attributes"]
        said_BBA = (caption_BA[None, :, :] == image_BA[:, None, :]) | (caption_BA[None, :, :] < 0)
        return jnp.all(said_BBA, axis=-1).astype(jnp.float32)
    return jnp.all(tokens_BT[:, None, :] == tokens_BT[None, :, :], axis=-1).astype(jnp.float32)


def infonce_loss(logits_BB: jax.Array, positives_BB: jax.Array) -> jax.Array:
    """½ [ -1/B Σ_i Σ_j R_ij log softmax_j(logits_ij) - 1/B Σ_j Σ_i C_ij log softmax_i(logits_ij) ],
    R, C: `positives_BB` normalised to sum 1 over each row (image->text) and each column (text->image)."""
    rows_BB = positives_BB / positives_BB.sum(axis=1, keepdims=True)
    cols_BB = positives_BB / positives_BB.sum(axis=0, keepdims=True)
    image_to_text = -jnp.sum(rows_BB * jax.nn.log_softmax(logits_BB, axis=1), axis=1).mean()
    text_to_image = -jnp.sum(cols_BB * jax.nn.log_softmax(logits_BB, axis=0), axis=0).mean()
    return 0.5 * (image_to_text + text_to_image)


def siglip_loss(logits_BB: jax.Array, positives_BB: jax.Array) -> jax.Array:
    """-1/B Σ_ij log σ(z_ij · logits_ij), z = +1 on positives, -1 elsewhere (logits include the bias)."""
    z_BB = 2.0 * positives_BB - 1.0
    return -jnp.sum(jax.nn.log_sigmoid(z_BB * logits_BB)) / logits_BB.shape[0]


def contrastive_loss(image_BE: jax.Array, text_BE: jax.Array, positives_BB: jax.Array, scale: jax.Array,
                     bias: jax.Array | None = None, *, kind: str = "infonce") -> tuple[jax.Array, jax.Array]:
    """The global-batch contrastive loss of normalised embeddings; returns (loss, logits_BB)."""
    logits_BB = scale * jnp.einsum("ie,je->ij", image_BE, text_BE)  # s · x_i · y_j
    if kind == "siglip":
        return siglip_loss(logits_BB + bias, positives_BB), logits_BB
    return infonce_loss(logits_BB, positives_BB), logits_BB


def loss_fn(model: CLIP, batch: dict[str, Any], rng: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The trainer's loss: contrastive loss over the whole (global) batch; `rng` is unused."""
    del rng
    image_BE, text_BE = model.encode_images(batch["images"]), model.encode_texts(batch["tokens"])
    positives_BB = positives(batch, model.targets)
    bias = model.bias[...] if model.bias is not None else None
    loss, logits_BB = contrastive_loss(image_BE, text_BE, positives_BB, model.scale(), bias,
                                       kind=model.loss_kind)
    # in-batch accuracy: each image's best-scoring caption describes it truly
    best_B = jnp.argmax(logits_BB, axis=1)
    hit_B = jnp.take_along_axis(positives(batch), best_B[:, None], axis=1)[:, 0] > 0
    return loss, {"accuracy": hit_B.mean(), "scale": model.scale()}


def prepare(config: Config, examples: dict[str, Any], tokenizer: Any, workdir: Any = None) -> dict[str, Any]:
    """For the "attributes" targets on one-object shapes: add `image_attributes` int32 (N, 4) = (colour,
    shape, size, position) indices and `caption_attributes` int32 (N, 4), the same with -1 where the
    caption does not name the attribute; and rewrite a fraction `partial_captions` of the captions to
    name only the shape ("a large triangle") or only the colour ("a large red shape"), so that each word
    must mean the same thing whatever it is combined with. Other sources pass through unchanged."""
    objects = examples.get("objects")
    if config.targets != "attributes" or objects is None or any(len(o) != 1 for o in objects):
        return examples
    from minimodal.data import shapes

    keys = ("color", "shape", "size", "position")
    vocab = (list(shapes.COLORS), shapes.SHAPES, ("small", "large"), shapes.POSITIONS)
    words = (*vocab[:3], [shapes.PHRASES[p] for p in shapes.POSITIONS])  # as the captions say them
    image_NA = np.array([[v.index(o[0][k]) for v, k in zip(vocab, keys)] for o in objects], np.int32)
    rng = np.random.default_rng([config.seed, 2])
    n = len(objects)
    partial_N = np.where(rng.random(n) < config.partial_captions, rng.integers(0, 2, n), -1)  # drop 0/1/none
    captions, caption_NA = [], np.empty_like(image_NA)
    for n, (row, caption, drop) in enumerate(zip(image_NA, examples["captions"], partial_N)):
        if drop == 0:  # "a large red circle" -> "a large circle"
            caption = caption.replace(f" {words[0][row[0]]} ", " ", 1)
        elif drop == 1:  # "a large red circle" -> "a large red shape"
            caption = caption.replace(f" {words[1][row[1]]}", " shape", 1)
        captions.append(caption)
        caption_NA[n] = [a if f" {w[a]}" in f" {caption}" else -1 for a, w in zip(row, words)]
    return {**examples, "captions": captions, "image_attributes": image_NA, "caption_attributes": caption_NA}


def build(config: Config, tokenizer: Any, rngs: nnx.Rngs) -> CLIP:
    return CLIP(config, tokenizer.vocab_size, eos_id=tokenizer.eos_id, rngs=rngs)


def evaluate(model: CLIP, config: Config, tokenizer: Any, workdir: Any = None) -> dict[str, float]:
    """Zero-shot accuracy (train distribution and holdout for shapes), retrieval recalls, temperature."""
    return evaluate_pipeline(ClipPipeline(model, config, tokenizer, workdir))


GRID_QUERIES = ("a red circle", "a blue square", "a green triangle", "a yellow cross", "a white square",
                "a red triangle")  # the last one is a held-out pair


def sample_grid(model: CLIP, config: Config, tokenizer: Any, rng: jax.Array, workdir=None) -> np.ndarray:
    """Search results as the trainer's sample grid: one row per query in GRID_QUERIES, its 7 best matches
    among 500 fresh images (shapes: train and holdout splits; other sources: their training images)."""
    from minimodal.data import load_examples, shapes

    seed = int(jax.random.randint(rng, (), 0, 2**31 - 1))
    if config.data == "shapes":
        pool = np.concatenate([shapes.generate(n, config.image_size, seed=seed, split=split)["images"]
                               for n, split in ((400, "train"), (100, "holdout"))])
    else:
        pool = load_examples(config.data, "train", 500, config.image_size, seed)["images"]
    pipeline = ClipPipeline(model, config, tokenizer)  # the pool embedded once for all the queries (as `search`)
    scores_QN = pipeline.embed_texts(list(GRID_QUERIES)) @ pipeline.embed_images(pool).T
    best_QK = np.argsort(-scores_QN, axis=1, kind="stable")[:, :7]
    return pool[best_QK.reshape(-1)]  # 6 x 7


FAMILY = Family("clip", Config, PRESETS, build, loss_fn, prepare=prepare, sample_grid=sample_grid,
                evaluate=evaluate, pipeline=ClipPipeline, per_example_loss=False,
                one_device_per_core=True)


def workdir_for(setting: str, workdir: str | Path) -> Path | None:
    """Where the CLIP another model stands on lives, from that model's setting: "auto" -> WORKDIR/clip (trained
    there by `train_for`), a path -> that path, "" -> None (no CLIP)."""
    if not setting:
        return None
    return Path(workdir) / "clip" if setting == "auto" else Path(setting)


def train_for(user: str, path: str | Path, preset: str, overrides: dict[str, Any]) -> Path:
    """Train CLIP's `preset` (with `overrides`) in `path` for another model that stands on it (`user` says which
    and why), unless a finished run is there; a run cut off there resumes. Returns `path`."""
    config, path = override(PRESETS[preset], overrides), Path(path)
    if not (path / "checkpoints" / str(config.steps)).exists():
        distributed.say(f"{user}: training CLIP's {preset!r} preset in {path} first")
        fit(FAMILY, config, path)
    return path


__all__ = ["CLIP", "FAMILY", "GRID_QUERIES", "PRESETS", "ClipPipeline", "Config", "ConvEncoder", "TextEncoder",
           "ViT", "contrastive_loss", "infonce_loss", "positives", "prepare", "linear_probe", "retrieval_recall",
           "search", "siglip_loss", "train_for", "workdir_for", "zero_shot"]
