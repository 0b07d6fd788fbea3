"""DDPM: a U-Net learns to remove Gaussian noise; sampling runs the noising process backwards, guided by text.

    train   x_t = √ᾱ_t x_0 + √(1 - ᾱ_t) ε,  t ~ U{0..T-1};  minimise ‖ε - ε_θ(x_t, t, c)‖²  (or the v target),
            with the caption c replaced by the empty caption ∅ with probability `cond_drop`
    sample  ε̃ = ε_θ(x_t, t, ∅) + w (ε_θ(x_t, t, c) - ε_θ(x_t, t, ∅))  (classifier-free guidance, scale w),
            then an ancestral step (all T) or a DDIM step (any sub-sequence), in one compiled `lax.scan`.

The maths of the schedule, targets and samplers lives in `minimodal.diffusion`; the network in
`minimodal.nn.unet`. Text: CLIP's text encoder (a causal transformer over the shared tokenizer's ids) gives
token features (cross-attended at the U-Net's attended levels) and the pooled EOS vector (added to the
timestep embedding). By default it is a trained CLIP's, kept frozen (DALL-E 2's idea: condition on a text
embedding already aligned with images): `text_from_clip=auto` trains CLIP's fast preset in WORKDIR/clip first
(~40 s), `text_from_clip=DIR` takes one already trained; `--preset scratch` learns it with the U-Net.
`conditional=False` trains an unconditional model (e.g. on `digits`).

Legend: B batch, T text tokens, D text width, V vocabulary, H W image side, C channels.

    minimodal train ddpm --data shapes --workdir runs/ddpm        # ~4 min on a 2-core CPU, its CLIP included
    minimodal sample ddpm --workdir runs/ddpm "a red circle" "a blue square"
    minimodal eval ddpm --workdir runs/ddpm                        # caption fidelity ≥ 0.8 with guidance
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any, ClassVar, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from minimodal import clip, diffusion
from minimodal.clip import TextEncoder
from minimodal.config import TrainConfig, checked_options
from minimodal.data import denormalize_images, load_examples
from minimodal.nn.unet import UNet
from minimodal.tokenizer import BOS_ID, EOS_ID, PAD_ID
from minimodal.train import Family, load_model

SAMPLERS = ("ddim", "dpm++2m", "ancestral")


@dataclasses.dataclass(frozen=True)
class Config(TrainConfig):
    """DDPM on 16 px shapes, trained with min-SNR-5 weights: the U-Net runs at 16×16 and 8×8, attending to itself
    and to the text at 8×8 (these field defaults are the `scratch` preset's and unCLIP's decoder's; the `default`
    preset is in PRESETS)."""

    image_size: int = 16
    steps: int = 2600
    batch_size: int = 32
    lr: float = 2e-3
    warmup_steps: int = 100
    ema_decay: float = 0.995
    # U-Net
    channels: tuple[int, ...] = (32, 64)  # width per level; a 2× downsampling between levels
    num_res_blocks: int = 1
    attention_levels: tuple[int, ...] = (1,)  # levels with self- and cross-attention (0 = top); the middle has one
    num_heads: int = 4
    patch: int = 1  # space-to-depth factor: the U-Net runs at image_size / patch (2 for 32 px on a CPU)
    # text
    conditional: bool = True  # False: an unconditional model; prompts are ignored
    text_dim: int = 64
    text_depth: int = 2
    text_heads: int = 2
    # start the text encoder from a trained CLIP's: its work directory, or "auto" (WORKDIR/clip, where CLIP's
    # `clip_preset` is trained first on this run's data); "": learn it from scratch with the U-Net
    text_from_clip: str = ""
    clip_preset: str = "fast"  # CLIP's 16 px preset: 300 steps, ~40 s on a 2-core CPU, 99.7% zero-shot
    freeze_text: bool = False  # with text_from_clip: keep that text encoder as CLIP trained it (no fine-tuning)
    cond_drop: float = 0.1  # P(caption -> empty caption) in training, for classifier-free guidance
    # diffusion
    schedule: str = "cosine"
    diffusion_steps: int = 500  # T
    snr_scale: float = 1.0  # SNR_t × this at every t (> 1: less noise; `diffusion.make_schedule`)
    prediction: str = "eps"  # "eps" or "v"
    min_snr_gamma: float = 5.0  # > 0: weight the loss by min(SNR_t, γ) (Hang et al. 2023); 0: plain L_simple
    # sampling and evaluation defaults
    sampler: str = "dpm++2m"  # DPM-Solver++(2M): at 10 steps as faithful as DDIM at 50 (bench/results/ddpm.md)
    sample_steps: int = 10
    guidance: float = 3.0
    eval_prompts: int = 120  # per evaluated setting (the ancestral sampler gets a quarter)

    sampling_keys: ClassVar[frozenset[str]] = frozenset({"sampler", "sample_steps", "guidance", "eval_prompts"})


# About four minutes on a 2-core CPU (one device per core; 4.6-5.0 on one), CLIP included: the text encoder of a CLIP
# trained first and kept frozen (one learnt from scratch needed 83k images for what this reads from 48k), batch 16
# (1.6x the steps per second of batch 32, about the same images per second: more updates per image), no attention but
# the middle's, a higher rate and a short EMA for a short run (bench/results/ddpm.md, "Five minutes"). It samples with
# 20 DPM-Solver++(2M) steps: at 10 it names sizes less reliably (87% against 93.5% of 960 typed prompts; 0.074 s per
# image at 20 on a 2-core CPU; bench/results/ddpm.md, "Sampling steps for the five-minute default")
_FROZEN_CLIP = Config(steps=3000, batch_size=16, lr=5e-3, ema_decay=0.98, attention_levels=(), context_length=16,
                      text_dim=96, text_heads=4, text_from_clip="auto", freeze_text=True, sample_steps=20)

PRESETS: dict[str, Config] = {
    "default": _FROZEN_CLIP,
    # tiny and tour: the text encoder of CLIP's preset of the same name (the tour starts from its CLIP's)
    "tiny": Config(n_train=512, steps=20, batch_size=8, channels=(16, 32), num_heads=2, context_length=16,
                   text_dim=32, text_depth=1, text_heads=2, diffusion_steps=50, sample_steps=5, warmup_steps=2,
                   log_every=5, checkpoint_every=10, eval_prompts=8, attention_levels=()),
    "tour": Config(steps=1500, eval_prompts=60, context_length=16, text_dim=96, text_heads=4),
    # the default, shorter: 1700 steps fit beside DALL-E's training in the fast tour, where the two train side by
    # side (bench/results/trainer.md, "Two trainings side by side"); the tour gives it its own CLIP. It samples
    # with 10 steps, as the fast tour was measured
    "fast": dataclasses.replace(_FROZEN_CLIP, steps=1700, eval_prompts=60, sample_steps=10),
    # the default of 2026-12-04: the text encoder learnt from scratch, attention at 8×8 too; 2600 steps of batch
    # 32 in four slices (micro_batches=4: 1.25-1.38x the steps per second on a 2-core CPU), 10-13 min
    "scratch": Config(micro_batches=4),
    "gpu": Config(image_size=32, steps=20_000, batch_size=256, lr=1e-3, channels=(128, 256), num_res_blocks=2,
                  attention_levels=(1,), text_dim=128, text_heads=4, diffusion_steps=1000, ema_decay=0.9995,
                  eval_prompts=1000),
}


def null_tokens(batch: int, context_length: int) -> np.ndarray:
    """The empty caption ∅ = `BOS EOS PAD...` (what `Tokenizer.encode_batch([""] * B, T)` gives): int32 (B, T)."""
    tokens_BT = np.full((batch, context_length), PAD_ID, np.int32)
    tokens_BT[:, :2] = (BOS_ID, EOS_ID)
    return tokens_BT


class DDPM(nnx.Module):
    """f_θ(x_t, t, tokens, embed) -> ε̂ or v̂ (B, H, W, C); holds its config (static), no RNG state.

    With `embed_dim` E > 0 the network also reads a per-image vector e (unCLIP's decoder: a CLIP image
    embedding), as DALL-E 2 does: W e is added to the timestep embedding and `embed_tokens` more
    projections of e become context tokens the attended levels cross-attend to (beside the text, if any).
    """

    def __init__(self, config: Config, vocab_size: int, rngs: nnx.Rngs, *, embed_dim: int = 0,
                 embed_tokens: int = 4):
        self.config, self.embed_dim = config, embed_dim
        self.frozen = "text" if config.freeze_text else None  # the trainer keeps these Params fixed
        self.text = TextEncoder(vocab_size, config.context_length, config.text_dim, config.text_depth,
                                config.text_heads, eos_id=EOS_ID, rngs=rngs) if config.conditional else None
        width = config.text_dim if (config.conditional or embed_dim) else None
        self.embed_context = (nnx.Linear(embed_dim, embed_tokens * config.text_dim, rngs=rngs)
                              if embed_dim and embed_tokens else None)
        cond_dim = (config.text_dim if config.conditional else 0) + embed_dim
        self.unet = UNet(channels=config.channels, num_res_blocks=config.num_res_blocks,
                         attention_levels=config.attention_levels, num_heads=config.num_heads,
                         patch=config.patch, cond_dim=cond_dim or None,
                         context_dim=width if (config.conditional or self.embed_context) else None, rngs=rngs)

    def __call__(self, x_BHWC: jax.Array, t_B: jax.Array, tokens_BT: jax.Array | None = None,
                 embed_BE: jax.Array | None = None) -> jax.Array:
        if self.text is not None and tokens_BT is None:
            raise ValueError("this DDPM is text-conditional: pass tokens_BT (null_tokens for unconditional)")
        if self.embed_dim and embed_BE is None:
            raise ValueError(f"this DDPM reads an image embedding: pass embed_BE ({self.embed_dim} wide; zeros "
                             "for unconditional)")
        cond, context, mask = [], [], []
        if self.text is not None:
            features_BTD, pooled_BD = self.text(tokens_BT)
            cond.append(pooled_BD)
            context.append(features_BTD)
            mask.append(tokens_BT != PAD_ID)
        if self.embed_dim:
            cond.append(embed_BE)
            if self.embed_context is not None:  # (B, E) -> (B, K, D): K context tokens
                B = embed_BE.shape[0]
                context.append(self.embed_context(embed_BE).reshape(B, -1, self.config.text_dim))
                mask.append(jnp.ones(context[-1].shape[:2], bool))
        if not cond:
            return self.unet(x_BHWC, t_B)
        join = lambda parts: jnp.concatenate(parts, axis=1) if parts else None  # noqa: E731
        return self.unet(x_BHWC, t_B, jnp.concatenate(cond, axis=-1), join(context), join(mask))


def check_config(config: Config) -> None:
    if config.prediction not in diffusion.PREDICTIONS:
        raise ValueError(f"prediction={config.prediction!r}; choose one of {diffusion.PREDICTIONS}")
    if config.sampler not in SAMPLERS:
        raise ValueError(f"sampler={config.sampler!r}; choose one of {SAMPLERS}")
    if config.min_snr_gamma < 0:
        raise ValueError(f"min_snr_gamma must be > 0 (or 0 for the unweighted loss), got {config.min_snr_gamma}")
    if config.freeze_text and config.conditional and not config.text_from_clip:
        raise ValueError("freeze_text keeps the text encoder that text_from_clip gives: pass text_from_clip=CLIP_DIR "
                         "or text_from_clip=auto (or freeze_text=false to learn the text encoder from scratch)")
    if config.text_from_clip == "auto" and config.clip_preset not in clip.PRESETS:
        raise ValueError(f"clip_preset={config.clip_preset!r}; choose one of {', '.join(clip.PRESETS)}")
    if not 0.0 <= config.cond_drop <= 1.0:
        raise ValueError(f"cond_drop must be a probability, got {config.cond_drop}")
    side = config.patch * 2 ** (len(config.channels) - 1)
    if config.image_size % side:
        raise ValueError(f"image_size={config.image_size} must divide by patch · 2^(levels - 1) = {side}")


def schedule(config: Config) -> diffusion.Schedule:
    return diffusion.make_schedule(config.schedule, config.diffusion_steps, config.snr_scale)


def build(config: Config, tokenizer: Any, rngs: nnx.Rngs) -> DDPM:
    check_config(config)
    return DDPM(config, tokenizer.vocab_size, rngs)


def clip_dir(config: Config, workdir: str | Path) -> Path | None:
    """The CLIP whose text encoder a conditional DDPM starts from (`text_from_clip`; "auto": WORKDIR/clip), or None."""
    return clip.workdir_for(config.text_from_clip, workdir) if config.conditional else None


def _load_clip(path: Path):
    family, clip_model, clip_config, clip_tokenizer = load_model(path)
    if family.name != "clip":
        raise ValueError(f"text_from_clip={str(path)!r} holds a {family.name!r} model, not CLIP")
    return clip_model, clip_config, clip_tokenizer


def text_tokenizer(config: Config, workdir: str | Path) -> Any:
    """The tokenizer of the CLIP the text encoder comes from (None without one: the trainer makes one from the
    captions). With text_from_clip="auto", CLIP's `clip_preset` is trained on this run's data in WORKDIR/clip
    first (resumed if a run there was cut short; kept and reused once finished)."""
    path = clip_dir(config, workdir)
    if path is None:
        return None
    if config.text_from_clip == "auto":  # a text encoder the size of this DDPM's, trained on its data
        clip.train_for("text_from_clip=auto (the DDPM reads captions through CLIP's text encoder)", path,
                       config.clip_preset, {
                           "data": config.data, "seed": config.seed, "n_train": config.n_train,
                           "image_size": config.image_size, "context_length": config.context_length,
                           "text_width": config.text_dim, "text_depth": config.text_depth,
                           "text_heads": config.text_heads})
    return _load_clip(path)[2]


def warm_start(model: DDPM, config: Config, tokenizer: Any, workdir: str | Path) -> None:
    """With `text_from_clip`, copy that trained CLIP's text encoder into the fresh model (DALL-E 2's idea:
    condition the generator on a text embedding already aligned with images)."""
    path = clip_dir(config, workdir)
    if path is None or model.text is None:
        return
    clip_model, clip_config, clip_tokenizer = _load_clip(path)
    if clip_tokenizer.merges != tokenizer.merges:
        raise ValueError(f"the CLIP in {str(path)!r} uses another tokenizer: the DDPM must read its captions with "
                         "that CLIP's (the trainer does, through `text_tokenizer`)")
    wanted = dict(context_length=clip_config.context_length, text_dim=clip_config.text_width,
                  text_depth=clip_config.text_depth, text_heads=clip_config.text_heads)
    mismatched = {k: v for k, v in wanted.items() if getattr(config, k) != v}
    if mismatched:
        raise ValueError(f"the text encoder of {str(path)!r} needs "
                         + " ".join(f"{k}={v}" for k, v in mismatched.items()))
    nnx.update(model.text, nnx.state(clip_model.text_encoder))


def loss_fn(model: DDPM, batch: dict[str, jax.Array], rng: jax.Array, *, embed_drop: float = 0.0):
    """L_simple with uniform t. For classifier-free guidance the caption is dropped to ∅ with probability
    `cond_drop` and (a model with an image embedding) `batch["image_emb"]` to 0 with `embed_drop`, independently."""
    config = model.config
    text_key, loss_key = jax.random.split(rng)
    embed_key = jax.random.fold_in(text_key, 1)
    x0_BHWC = batch["images"]
    tokens_BT = embed_BE = None
    if model.text is not None:
        B, T = batch["tokens"].shape
        drop_B = jax.random.bernoulli(text_key, config.cond_drop, (B,))
        tokens_BT = jnp.where(drop_B[:, None], jnp.asarray(null_tokens(1, T)), batch["tokens"])
    if model.embed_dim:
        embed_BE = batch["image_emb"]
        embed_BE = jnp.where(jax.random.bernoulli(embed_key, embed_drop, embed_BE.shape[:1])[:, None], 0.0, embed_BE)
    loss = diffusion.simple_loss(schedule(config), config.prediction, lambda x, t: model(x, t, tokens_BT, embed_BE),
                                 x0_BHWC, loss_key, min_snr_gamma=config.min_snr_gamma or None)
    return loss, {}


# ----------------------------------------------------------------------------------------- sampling

@functools.partial(jax.jit, static_argnames=("graphdef", "sampler", "steps", "eta", "shape", "trajectory",
                                             "shared_noise"))
def _sample(graphdef, state, cond, key, guidance, *, sampler: str, steps: int, eta: float,
            shape: tuple[int, ...], trajectory: bool, shared_noise: bool):
    """One compiled sampling loop: x_T ~ N(0, I) -> x_{-1}, for B = shape[0] images.

    cond = (tokens_BT or None, embed_BE or None), guided against (∅, 0); `shared_noise`: one x_T for every row.
    """
    model = nnx.merge(graphdef, state)
    config, sched = model.config, schedule(model.config)
    noise_key, loop_key = jax.random.split(key)
    x_T = jax.random.normal(noise_key, (1,) + shape[1:] if shared_noise else shape)
    x_T = jnp.broadcast_to(x_T, shape)
    tokens_BT, embed_BE = cond
    if tokens_BT is None and embed_BE is None:
        model_fn = lambda x, t: model(x, t)  # noqa: E731
    else:
        null = (None if tokens_BT is None else jnp.asarray(null_tokens(*tokens_BT.shape)),
                None if embed_BE is None else jnp.zeros_like(embed_BE))
        model_fn = lambda x, t: diffusion.guided(  # noqa: E731
            lambda xx, tt, c: model(xx, tt, *c), x, t, cond, null, guidance)
    if sampler == "ancestral":
        return diffusion.ancestral_sample(sched, config.prediction, model_fn, x_T, loop_key,
                                          return_trajectory=trajectory)
    return diffusion.ddim_sample(sched, config.prediction, model_fn, x_T, loop_key, steps=steps, eta=eta,
                                 order=2 if sampler == "dpm++2m" else 1, return_trajectory=trajectory)


def _rows(x: np.ndarray | None, start: int, b: int) -> np.ndarray | None:
    """Rows start .. start + b - 1 of x, the last row repeated where x ends (a padded last chunk)."""
    if x is None:
        return None
    part = x[start:start + b]
    return np.concatenate([part, np.repeat(part[-1:], b - len(part), 0)])


def sample(model: DDPM, tokenizer: Any, prompts: Sequence[str] | int, key: jax.Array, *,
           embeds: np.ndarray | None = None, steps: int | None = None, guidance: float | None = None,
           sampler: str | None = None, eta: float = 0.0, return_trajectory: bool = False,
           shared_noise: bool = False, chunk: int = 64):
    """Images in [-1, 1] (N, H, W, 3) for N prompts (or N draws when `prompts` is an int and the model
    reads no text); a model with an image embedding also takes `embeds` float32 (N, E).

    Prompts go in chunks of `chunk` (the last padded), each chunk one compiled loop with key
    `fold_in(key, chunk index)`. With `return_trajectory`, also x after every step (steps, N, H, W, 3).
    `shared_noise`: every image of a chunk starts from the same x_T (e.g. to interpolate between embeddings).
    """
    config = model.config
    sampler = sampler or config.sampler
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler={sampler!r}; choose one of {SAMPLERS}")
    if steps is not None and not 1 <= steps <= config.diffusion_steps:
        raise ValueError(f"steps must be in [1, {config.diffusion_steps}] (the model's diffusion steps), got {steps}")
    if not 0 <= eta <= 1:
        raise ValueError(f"eta must be in [0, 1] (0: deterministic DDIM, 1: as noisy as ancestral), got {eta}")
    if sampler == "dpm++2m" and eta != 0:
        raise ValueError(f"eta={eta} is a DDIM option: dpm++2m is deterministic (pass sampler='ddim')")
    if guidance is not None and guidance < 0:
        raise ValueError(f"guidance must be >= 0 (0: unconditional, 1: conditional, > 1: guided), got {guidance}")
    steps = config.diffusion_steps if sampler == "ancestral" else (steps or config.sample_steps)
    guidance = config.guidance if guidance is None else guidance
    if isinstance(prompts, (int, np.integer)):
        if model.text is not None:
            raise ValueError("this DDPM is text-conditional: pass a list of prompts, not a count")
        n, tokens_NT = int(prompts), None
    else:
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise TypeError("prompts must be a list of str (wrap a single prompt in a list)")
        n = len(prompts)
        tokens_NT = tokenizer.encode_batch(list(prompts), config.context_length) if model.text else None
    if n < 1:
        raise ValueError("nothing to generate: pass at least one prompt")
    if model.embed_dim:
        if embeds is None or np.shape(embeds) != (n, model.embed_dim):
            raise ValueError(f"this DDPM reads an image embedding per image: pass embeds ({n}, {model.embed_dim}), "
                             f"got {None if embeds is None else np.shape(embeds)}")
        embeds = np.asarray(embeds, np.float32)
    elif embeds is not None:
        raise ValueError("this DDPM reads no image embedding: leave embeds out")
    graphdef, state = nnx.split(model)
    size = config.image_size
    images, trajs = [], []
    for i, start in enumerate(range(0, n, chunk)):
        b = min(chunk, n - start) if n <= chunk else chunk
        out = _sample(graphdef, state, (_rows(tokens_NT, start, b), _rows(embeds, start, b)),
                      jax.random.fold_in(key, i), jnp.float32(guidance), sampler=sampler, steps=steps,
                      eta=float(eta), shape=(b, size, size, 3), trajectory=return_trajectory,
                      shared_noise=shared_noise)
        x, traj = out if return_trajectory else (out, None)
        images.append(np.asarray(x)[: n - start])
        if return_trajectory:
            trajs.append(np.asarray(traj)[:, : n - start])
    x = np.concatenate(images)
    return (x, np.concatenate(trajs, axis=1)) if return_trajectory else x


class Pipeline:
    """What `minimodal.load(workdir)` returns for a DDPM: `generate(prompts, seed, ...) -> uint8 (N, H, W, 3)`."""

    def __init__(self, model: DDPM, config: Config, tokenizer: Any, workdir: str | Path | None = None):
        self.model, self.config, self.tokenizer, self.workdir = model, config, tokenizer, workdir

    @checked_options
    def generate(self, prompts: Sequence[str] | int, seed: int = 0, steps: int | None = None,
                 guidance: float | None = None, sampler: str | None = None, eta: float = 0.0,
                 return_trajectory: bool = False):
        """uint8 images (N, H, W, 3); with `return_trajectory` also uint8 x_t after every step (S, N, H, W, 3).

        steps: sampling steps of "dpm++2m" or "ddim" (default `config.sample_steps`; "ancestral" takes all T).
        sampler: "dpm++2m" (DPM-Solver++(2M)), "ddim" (η = `eta`) or "ancestral" (default `config.sampler`).
        guidance: classifier-free guidance scale w (0: unconditional, 1: conditional, >1: guided).
        """
        out = sample(self.model, self.tokenizer, prompts, jax.random.key(seed), steps=steps, guidance=guidance,
                     sampler=sampler, eta=eta, return_trajectory=return_trajectory)
        if return_trajectory:
            return denormalize_images(out[0]), denormalize_images(out[1])
        return denormalize_images(out)


def pipeline(model: DDPM, config: Config, tokenizer: Any, workdir: str | Path | None = None) -> Pipeline:
    return Pipeline(model, config, tokenizer, workdir)


GRID_PROMPTS = [f"a {c} {s}" for c, s in zip(
    ["red", "green", "blue", "yellow", "purple", "white", "red", "green", "blue", "yellow", "purple", "white"],
    ["circle", "square", "triangle", "cross", "circle", "square", "square", "triangle", "circle", "circle",
     "cross", "triangle"])]


def sample_grid(model: DDPM, config: Config, tokenizer: Any, rng: jax.Array, workdir=None) -> np.ndarray:
    """uint8 (12, H, W, 3): one image per fixed prompt (shapes), or training captions of other sources."""
    if model.text is None:
        prompts: Sequence[str] | int = len(GRID_PROMPTS)
    elif config.data == "shapes":
        prompts = GRID_PROMPTS
    else:
        prompts = load_examples(config.data, "train", len(GRID_PROMPTS), config.image_size, config.seed)["captions"]
    return denormalize_images(sample(model, tokenizer, prompts, rng))


def evaluate(model: DDPM, config: Config, tokenizer: Any, workdir: str | Path | None = None) -> dict[str, float]:
    """Caption fidelity (exact grader) of shapes prompts, by sampler / guidance / split.

    One object: training captions of an unseen seed with the few-step `sampler` (DPM-Solver++(2M) or DDIM)
    at `sample_steps` and guidance w, without guidance (w = 1), the ancestral sampler with w (a quarter as
    many prompts: it takes all T steps), held-out pairs with w;
    and prompts as people type them ("a red circle", `metrics.typed_prompt_fidelity`), per shape.
    Two objects (`--data shapes:objects=2`): the binding outcomes of typed two-object prompts.
    """
    from minimodal.data import shapes, source_options
    from minimodal.metrics import caption_fidelity, typed_prompt_report
    from minimodal.viz import save_grid

    name, _, options = config.data.partition(":")
    if name != "shapes" or model.text is None:
        return {}
    n, w, key = config.eval_prompts, config.guidance, jax.random.key(config.seed + 1)
    generate = lambda prompts: denormalize_images(sample(model, tokenizer, prompts, key))  # noqa: E731
    if int(source_options(options).get("objects", 1)) == 2:
        return typed_prompt_report(generate, n, config.seed + 10_000, objects=2)
    train = shapes.generate(n, config.image_size, seed=config.seed + 10_000, split="train")
    held = shapes.generate(n, config.image_size, seed=config.seed + 10_000, split="holdout")

    def fidelity(name, data, m, **options):
        images = denormalize_images(sample(model, tokenizer, data["captions"][:m], key, **options))
        if workdir is not None:  # the first 24 samples, for a look at what was graded
            save_grid(images[:24], Path(workdir) / "eval" / f"{name}.png", ncols=12)
        return float(caption_fidelity(images, data["objects"][:m]))

    fast = "ddim" if config.sampler == "ancestral" else config.sampler  # the few-step sampler graded
    name = f"{fast}{config.sample_steps}"
    settings = {
        f"fidelity_{name}_w{w:g}": (train, n, dict(sampler=fast, guidance=w)),
        f"fidelity_{name}_w1": (train, n, dict(sampler=fast, guidance=1.0)),
        f"fidelity_ancestral_w{w:g}": (train, max(1, n // 4), dict(sampler="ancestral", guidance=w)),
        f"fidelity_holdout_{name}_w{w:g}": (held, n, dict(sampler=fast, guidance=w)),
    }
    out = {name: fidelity(name, data, m, **options) for name, (data, m, options) in settings.items()}
    return out | typed_prompt_report(generate, n, config.seed + 10_000)


FAMILY = Family(name="ddpm", config_class=Config, presets=PRESETS, build=build, loss_fn=loss_fn,
                text_tokenizer=text_tokenizer, warm_start=warm_start, sample_grid=sample_grid, evaluate=evaluate,
                pipeline=pipeline, one_device_per_core=True)
