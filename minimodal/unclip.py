"""DALL-E 2 (unCLIP, Ramesh et al. 2022): a prior to CLIP image embeddings, a diffusion decoder from them.

Both stages stand on a frozen, trained CLIP (`clip=DIR`; without one, `minimodal train unclip` first
trains CLIP's default preset, at the decoder's image size, in WORKDIR/clip). For a caption c with CLIP
text embedding y and an image x with CLIP image embedding z (unit vectors, E wide):

    prior     p(z | y, c): a diffusion over √E·z (`minimodal.prior`), trained in WORKDIR/prior;
              prior="text" skips it and hands the decoder y itself (the paper's baseline)
    decoder   p(x | z): the DDPM's U-Net (`minimodal.ddpm.DDPM`) reading z twice, added to the timestep
              embedding and as `embed_tokens` context tokens; z -> 0 with probability `embed_drop` in
              training, so sampling can guide: ε̃ = ε(x_t, 0) + w (ε(x_t, z) - ε(x_t, 0))
    generate  c -> y -> prior -> ẑ -> decoder (DDIM) -> x
    vary      x -> z -> decoder from fresh noise: what z pins down (colour, shape) stays, what CLIP ignores moves
    interpolate  slerp(z_a, z_b, λ) decoded from one shared x_T, λ = 0 .. 1

Legend: N images, E CLIP's embedding width, H W the decoder's image side (16 px on a CPU; CLIP sees 32).

    minimodal train unclip --data shapes --workdir runs/unclip clip=runs/clip
    minimodal sample unclip --workdir runs/unclip --prompt "a red circle" -n 4
    minimodal vary --workdir runs/unclip --image photo.png -n 8
    minimodal eval unclip --workdir runs/unclip
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

import jax
import numpy as np
from flax import nnx

from minimodal import ddpm, distributed
from minimodal import prior as unclip_prior
from minimodal.clip_tasks import ClipPipeline
from minimodal.config import checked_options, override
from minimodal.data import denormalize_images, load_examples
from minimodal.train import Family, fit, load_model

PRIORS = ("diffusion", "text")


@dataclasses.dataclass(frozen=True)
class Config(ddpm.Config):
    """unCLIP's decoder: the DDPM default (16 px U-Net) reading a CLIP image embedding instead of the caption."""

    context_length: int = 16  # CLIP's (the prior reads the caption's tokens with CLIP's tokenizer)
    conditional: bool = False  # True: the decoder also reads the caption (the paper's optional text input)
    clip: str = ""  # a trained CLIP's work directory ("" = train CLIP's `clip_preset`, at image_size, in WORKDIR/clip)
    clip_preset: str = "default"
    embed_dim: int = 64  # E: that CLIP's joint embedding width
    embed_tokens: int = 4  # context tokens made from z
    embed_drop: float = 0.1  # P(z -> 0) in training, for classifier-free guidance
    prior: str = "diffusion"  # "diffusion" (trained in WORKDIR/prior) or "text" (y itself: the baseline)
    prior_preset: str = "default"  # a preset of minimodal.prior
    prior_steps: int = 0  # training steps of the prior (0: the preset's)
    # the decoder's sampler as measured in the README (the DDPM's default moved to dpm++2m / 10 steps; not yet
    # measured on this decoder)
    sampler: str = "ddim"
    sample_steps: int = 50

    def __post_init__(self):
        if self.prior not in PRIORS:
            raise ValueError(f"prior={self.prior!r}; choose one of {PRIORS}")
        if self.clip_preset not in ("default", "tiny", "gpu"):
            raise ValueError(f"clip_preset={self.clip_preset!r}; choose one of default, tiny, gpu")
        if self.prior_preset not in unclip_prior.PRESETS:
            raise ValueError(f"prior_preset={self.prior_preset!r}; choose one of {', '.join(unclip_prior.PRESETS)}")
        if not 0.0 <= self.embed_drop <= 1.0:
            raise ValueError(f"embed_drop must be a probability, got {self.embed_drop}")


PRESETS: dict[str, Config] = {
    "default": Config(),
    "tiny": Config(n_train=512, steps=20, batch_size=8, channels=(16, 32), num_heads=2, text_dim=32, text_depth=1,
                   text_heads=2, diffusion_steps=50, sample_steps=5, warmup_steps=2, log_every=5,
                   checkpoint_every=10, eval_prompts=8, attention_levels=(), embed_dim=16, embed_tokens=2,
                   prior_preset="tiny", clip_preset="tiny"),
    "gpu": Config(image_size=32, steps=20_000, batch_size=256, lr=1e-3, channels=(128, 256), num_res_blocks=2,
                  text_dim=128, text_heads=4, diffusion_steps=1000, ema_decay=0.9995, eval_prompts=1000,
                  embed_dim=256, context_length=32, prior_preset="gpu", clip_preset="gpu"),
}


# ---------------------------------------------------------------------------------------- the CLIP

def clip_dir(config: Config, workdir: str | Path) -> Path:
    return Path(config.clip) if config.clip else Path(workdir) / "clip"


def load_clip(config: Config, workdir: str | Path) -> ClipPipeline:
    """The frozen CLIP of a run, checked against the run's config."""
    path = clip_dir(config, workdir)
    if not path.exists():
        raise FileNotFoundError(f"no CLIP at {path}: train one with `minimodal train clip --data shapes --workdir "
                                f"{path}`, or leave clip= out and `minimodal train unclip` trains one")
    family, model, clip_config, tokenizer = load_model(path)
    if family.name != "clip":
        raise ValueError(f"clip={path} holds a {family.name!r} model, not CLIP")
    if clip_config.embed_dim != config.embed_dim or clip_config.context_length != config.context_length:
        raise ValueError(f"the CLIP in {path} has embed_dim={clip_config.embed_dim}, context_length="
                         f"{clip_config.context_length}; set those on the unCLIP run too")
    return ClipPipeline(model, clip_config, tokenizer, path)


def text_tokenizer(config: Config, workdir: str | Path):
    """CLIP's tokenizer (training CLIP's `clip_preset` first when no `clip=DIR` is given)."""
    from minimodal import clip

    path = clip_dir(config, workdir)
    if not config.clip:
        clip.train_for("no clip=DIR given", path, config.clip_preset, {
            "data": config.data, "seed": config.seed, "n_train": config.n_train, "image_size": config.image_size})
    pipeline = load_clip(config, workdir)
    distributed.say(f"unCLIP uses the CLIP in {path} ({pipeline.config.image_size} px, E = {config.embed_dim})")
    return pipeline.tokenizer


def prior_config(config: Config) -> unclip_prior.Config:
    """The prior this run trains: its preset, with this run's data keys (and `prior_steps`)."""
    keys = {"data": config.data, "seed": config.seed, "n_train": config.n_train, "image_size": config.image_size,
            "vocab_size": config.vocab_size, "context_length": config.context_length, "embed_dim": config.embed_dim}
    if config.prior_steps:
        keys["steps"] = config.prior_steps
    return override(unclip_prior.PRESETS[config.prior_preset], keys)


def load_prior(config: Config, workdir: str | Path) -> unclip_prior.Prior | None:
    if config.prior == "text":
        return None
    path = Path(workdir) / "prior"
    family, model, _, _ = load_model(path)
    if family.name != "unclip_prior":
        raise ValueError(f"{path} holds a {family.name!r} model, not an unCLIP prior")
    return model


def prepare(config: Config, examples: dict[str, Any], tokenizer: Any, workdir: str | Path) -> dict[str, Any]:
    """Embed the training images (and captions) with the frozen CLIP, train the prior on (y, tokens) -> z,
    and add `image_emb` float32 (N, E) for the decoder."""
    clip = load_clip(config, workdir)
    size = clip.config.image_size
    seen = examples
    if size != config.image_size:  # CLIP sees the same examples rendered at its own size
        seen = load_examples(config.data, "train", len(examples["captions"]), size, config.seed)
        if list(seen["captions"]) != list(examples["captions"]):
            raise ValueError(f"{config.data} gives other examples at {size} px (the CLIP's size) than at "
                             f"{config.image_size} px (the decoder's): train the CLIP at image_size="
                             f"{config.image_size} too (or the decoder at {size})")
    distributed.say(f"embedding {len(seen['captions'])} training images and captions with the CLIP")
    image_emb = clip.embed_images(seen["images"])
    if config.prior == "diffusion":
        text_emb = clip.embed_texts(list(examples["captions"]))
        fit(unclip_prior.FAMILY, prior_config(config), Path(workdir) / "prior", tokenizer=tokenizer,
            examples={"captions": list(examples["captions"]), "text_emb": text_emb, "image_emb": image_emb})
    return {**examples, "image_emb": image_emb}


def build(config: Config, tokenizer: Any, rngs: nnx.Rngs) -> ddpm.DDPM:
    if config.text_from_clip or config.freeze_text:
        raise ValueError("text_from_clip and freeze_text are the text-to-image DDPM's options: unCLIP's decoder reads "
                         "CLIP's image embedding (and, with conditional=true, the caption through its own encoder)")
    ddpm.check_config(config)
    return ddpm.DDPM(config, tokenizer.vocab_size, rngs, embed_dim=config.embed_dim, embed_tokens=config.embed_tokens)


def loss_fn(model: ddpm.DDPM, batch: dict[str, Any], rng: jax.Array):
    return ddpm.loss_fn(model, batch, rng, embed_drop=model.config.embed_drop)


# ------------------------------------------------------------------------------------------ pipeline

def slerp(a_E: np.ndarray, b_E: np.ndarray, weights_L: np.ndarray) -> np.ndarray:
    """Spherical interpolation of unit vectors: sin((1-λ)θ)/sin θ · a + sin(λθ)/sin θ · b, θ = ∠(a, b): (L, E)."""
    theta = np.arccos(np.clip(a_E @ b_E, -1.0, 1.0))
    lam_L1 = np.asarray(weights_L, np.float64)[:, None]
    if theta < 1e-6:  # (almost) the same direction: a straight line is as good
        out = (1 - lam_L1) * a_E + lam_L1 * b_E
    else:
        out = (np.sin((1 - lam_L1) * theta) * a_E + np.sin(lam_L1 * theta) * b_E) / np.sin(theta)
    return out.astype(np.float32)


def _images(images_uint8: Any, what: str) -> np.ndarray:
    images = np.asarray(images_uint8)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"{what} expects uint8 images (N, H, W, 3), got {images.dtype} {images.shape} "
                         "(one image? pass image[None])")
    return images


class Pipeline:
    """What `minimodal.load(workdir)` returns for unCLIP: generate, vary, interpolate, reconstruct (uint8)."""

    def __init__(self, decoder: ddpm.DDPM, config: Config, tokenizer: Any, workdir: str | Path,
                 clip: ClipPipeline | None = None, prior_model: unclip_prior.Prior | None = None):
        self.decoder, self.config, self.tokenizer, self.workdir = decoder, config, tokenizer, Path(workdir)
        self.clip = clip or load_clip(config, workdir)
        self.prior = prior_model if prior_model is not None else load_prior(config, workdir)

    def _decode(self, embeds_NE: np.ndarray, prompts: Sequence[str] | None, seed: int, **options) -> np.ndarray:
        n = len(embeds_NE)
        texts = list(prompts) if self.decoder.text is not None else n
        return denormalize_images(ddpm.sample(self.decoder, self.tokenizer, texts, jax.random.key(seed),
                                              embeds=embeds_NE, **options))

    @checked_options
    def embed_prompts(self, prompts: Sequence[str], seed: int = 0, prior: str | None = None,
                      prior_steps: int | None = None, prior_guidance: float | None = None,
                      candidates: int | None = None) -> np.ndarray:
        """The image embeddings (N, E) the decoder is given for `prompts`: the prior's draws, or with
        prior="text" the CLIP text embeddings themselves."""
        if isinstance(prompts, str) or not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
            raise ValueError("prompts must be a non-empty list of non-empty str (wrap a single prompt in a list)")
        choice = prior or ("text" if self.prior is None else "diffusion")
        if choice not in PRIORS:
            raise ValueError(f"prior={choice!r}; choose one of {PRIORS}")
        text_NE = self.clip.embed_texts(list(prompts))
        if choice == "text":
            return text_NE
        if self.prior is None:
            raise ValueError(f"{self.workdir} was trained with prior='text': it has no diffusion prior")
        tokens = self.tokenizer.encode_batch(list(prompts), self.config.context_length)
        return unclip_prior.sample(self.prior, text_NE, tokens, jax.random.fold_in(jax.random.key(seed), 1),
                            steps=prior_steps, guidance=prior_guidance, candidates=candidates)

    @checked_options
    def generate(self, prompts: Sequence[str], seed: int = 0, steps: int | None = None,
                 guidance: float | None = None, prior: str | None = None, prior_steps: int | None = None,
                 prior_guidance: float | None = None, candidates: int | None = None) -> np.ndarray:
        """uint8 images (N, H, W, 3): caption -> prior -> image embedding -> decoder.

        steps / guidance: the decoder's DDIM steps and guidance scale; prior: "diffusion" or "text" (the
        baseline); prior_steps / prior_guidance / candidates: the prior's sampling (see minimodal.prior).
        """
        embeds = self.embed_prompts(prompts, seed=seed, prior=prior, prior_steps=prior_steps,
                                    prior_guidance=prior_guidance, candidates=candidates)
        return self._decode(embeds, prompts, seed, steps=steps, guidance=guidance)

    def _embed(self, images_uint8: Any, what: str) -> np.ndarray:
        return self.clip.embed_images(_images(images_uint8, what))

    @checked_options
    def vary(self, images_uint8: Any, n: int = 4, seed: int = 0, steps: int | None = None,
             guidance: float | None = None) -> np.ndarray:
        """n variations per image, uint8 (M, n, H, W, 3): each image's CLIP embedding decoded from fresh noise.
        Images of any size (CLIP resizes them to its own)."""
        if n < 1:
            raise ValueError(f"n (variations per image) must be at least 1, got {n}")
        z_ME = self._embed(images_uint8, "vary")
        images = self._decode(np.repeat(z_ME, n, axis=0), None, seed, steps=steps, guidance=guidance)
        return images.reshape(len(z_ME), n, *images.shape[1:])

    @checked_options
    def reconstruct(self, images_uint8: Any, seed: int = 0, steps: int | None = None,
                    guidance: float | None = None) -> np.ndarray:
        """Each image decoded from its own CLIP embedding: uint8 (N, H, W, 3)."""
        return self._decode(self._embed(images_uint8, "reconstruct"), None, seed, steps=steps, guidance=guidance)

    @checked_options
    def interpolate(self, image_a: Any, image_b: Any, steps: int = 8, seed: int = 0,
                    guidance: float | None = None) -> np.ndarray:
        """uint8 (steps, H, W, 3): slerp from image a's embedding to image b's, all decoded from one x_T."""
        if steps < 2:
            raise ValueError(f"steps (images in the strip) must be at least 2, got {steps}")
        pair = np.stack([np.asarray(image_a), np.asarray(image_b)])
        z_a, z_b = self._embed(pair, "interpolate (each of image_a, image_b: one uint8 image (H, W, 3))")
        z_LE = slerp(z_a, z_b, np.linspace(0.0, 1.0, steps))
        return self._decode(z_LE, None, seed, guidance=guidance, shared_noise=True)


def pipeline(model: ddpm.DDPM, config: Config, tokenizer: Any, workdir: str | Path) -> Pipeline:
    return Pipeline(model, config, tokenizer, workdir)


def sample_grid(model: ddpm.DDPM, config: Config, tokenizer: Any, rng: jax.Array,
                workdir: str | Path | None = None) -> np.ndarray:
    """uint8 (12, H, W, 3): the DDPM's grid prompts through the prior and the decoder."""
    if workdir is None:
        raise ValueError("unCLIP's sample grid needs the work directory (its CLIP and prior)")
    seed = int(jax.random.randint(rng, (), 0, 2**31 - 1))
    return Pipeline(model, config, tokenizer, workdir).generate(ddpm.GRID_PROMPTS, seed=seed)


def evaluate(model: ddpm.DDPM, config: Config, tokenizer: Any, workdir: str | Path) -> dict[str, float]:
    """See `minimodal.unclip_eval.evaluate`: fidelity on typed prompts (prior and baseline), the prior's
    embeddings, variations and reconstructions (one-object data), or binding (two-object data)."""
    from minimodal.unclip_eval import evaluate as run

    return run(Pipeline(model, config, tokenizer, workdir))


FAMILY = Family(name="unclip", config_class=Config, presets=PRESETS, build=build, loss_fn=loss_fn,
                prepare=prepare, text_tokenizer=text_tokenizer, sample_grid=sample_grid, evaluate=evaluate,
                pipeline=pipeline)
