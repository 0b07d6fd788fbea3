"""Whisper, small: speech -> log-mel -> transformer encoder -> text decoder with cross-attention.

Legend: B batch, L samples, F mel frames, M mel bands, S encoder positions (F / 2), T text tokens, D width,
V vocabulary, W beams, X = B·W rows of a beam search.

    mel_BFM   = log_mel(waveform_BL)                 (minimodal.audio; 25 ms windows every `hop` samples)
    audio_BSD = Encoder(GELU(Conv_k3,s2(GELU(Conv_k3(mel)))) + sinusoid(S))   stride 2: S = F / 2
Whisper hops 10 ms (160 samples), so each encoder position covers 20 ms; here the default hop is 20 ms
(320 samples, 40 ms per position): half the encoder's work, and still ~6 positions per spoken word.
    p(text | audio) = Π_t p(text_t | text_<t, audio):  a causal decoder over the shared BPE tokenizer's ids,
                      each block self-attention -> cross-attention to audio_BSD -> MLP; the output head is the
                      token embedding transposed (tied, as in Whisper).
Training is teacher-forced cross-entropy over the caption's tokens (BOS ... EOS), label smoothing ε:
    loss = (1 - ε) CE(target) + ε · mean_v(-log p_v),  over non-PAD targets.
Optional augmentation inside the loss (keys from the step's rng): white noise at a random SNR on a fraction
`noise_p` of the clips, and SpecAugment-style masks (`spec_augment`: two bands of mels, two spans of frames).

Decoding (each one compiled `lax.while_loop`, stopping when every row has said EOS):
    greedy  next = argmax_v p(v | prefix, audio)
    beam    keep the W prefixes of highest Σ log p; a finished beam only extends by PAD at no cost; the answer is
            the beam of highest Σ log p / length^α
With the KV cache (default) each step runs one position through the decoder against cached self-attention
keys/values, and the cross-attention keys/values of the audio are projected once per utterance; without it
(`cached=False`, the benchmark's baseline) every step re-runs the decoder over the whole prefix.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from minimodal import audio
from minimodal.config import TrainConfig, checked_options
from minimodal.nn.attention import causal_mask
from minimodal.nn.transformer import Transformer
from minimodal.nn.unet import timestep_embedding
from minimodal.tokenizer import BOS_ID, EOS_ID, PAD_ID
from minimodal.train import Family


@dataclasses.dataclass(frozen=True)
class Config(TrainConfig):
    """Whisper config: audio front end, encoder and decoder sizes, augmentation, decoding and evaluation."""

    data: str = "spoken_shapes"
    n_train: int = 8_000
    context_length: int = 16  # T: transcript tokens, BOS and EOS included
    audio_seconds: float = 4.0  # every clip is zero-padded to this length (L = 16,000 · seconds samples)
    n_mels: int = 80
    hop: int = 320  # samples between mel frames (20 ms; Whisper: 160)
    # small and many steps: on the 2-core CPU, dim 64 at batch 16 learned the alignment of words to sound in
    # fewer minutes than dim 96-128 at batch 16-32 (pilot runs, bench/results/whisper.md)
    dim: int = 64
    encoder_depth: int = 3
    decoder_depth: int = 2
    num_heads: int = 4
    label_smoothing: float = 0.1
    # noise on every other clip from step 0 held the alignment back for >1000 steps; 1 in 5, mostly mild
    noise_p: float = 0.2  # fraction of training clips given white noise at an SNR uniform in [min, max] dB
    noise_snr_min: float = 10.0
    noise_snr_max: float = 40.0
    spec_augment: bool = False  # SpecAugment-style masks (an option: they slow the early learning too)
    # decoding and evaluation defaults
    beam_size: int = 4
    length_penalty: float = 1.0  # α in Σ log p / length^α (beam search's final choice)
    eval_n: int = 200  # utterances per evaluation split
    eval_snr_db: float = 10.0  # the noisy half of the evaluation
    # training
    steps: int = 4000
    batch_size: int = 16
    lr: float = 3e-3
    warmup_steps: int = 100
    log_every: int = 100
    checkpoint_every: int = 1000

    sampling_keys: ClassVar[frozenset[str]] = frozenset({"beam_size", "length_penalty", "eval_n", "eval_snr_db"})

    def __post_init__(self):
        if self.dim % self.num_heads:
            raise ValueError(f"dim={self.dim} must be divisible by num_heads={self.num_heads}")
        if not 0 <= self.label_smoothing < 1 or not 0 <= self.noise_p <= 1:
            raise ValueError("label_smoothing must be in [0, 1) and noise_p in [0, 1]")
        if self.frames % 2:
            raise ValueError(f"audio_seconds={self.audio_seconds} gives {self.frames} frames of {self.hop} "
                             "samples; the stride-2 stem needs an even number")
        if self.beam_size < 1:
            raise ValueError(f"beam_size must be at least 1, got {self.beam_size}")

    @property
    def samples(self) -> int:
        """L: samples per clip at 16 kHz."""
        return int(round(self.audio_seconds * audio.SAMPLE_RATE))

    @property
    def frames(self) -> int:
        """F: mel frames per clip."""
        return self.samples // self.hop


PRESETS: dict[str, Config] = {
    "default": Config(),
    "tiny": Config(dim=32, encoder_depth=1, decoder_depth=1, num_heads=2, n_mels=40,
                   steps=10, batch_size=8, n_train=64, log_every=5, checkpoint_every=10, warmup_steps=2,
                   eval_n=4, beam_size=2),
    "gpu": Config(dim=384, encoder_depth=6, decoder_depth=4, num_heads=6, steps=5000, batch_size=128,
                  n_train=40_000, lr=1e-3, noise_p=0.5, noise_snr_min=5.0, spec_augment=True),
}


# -------------------------------------------------------------------------------------------- model
class Whisper(nnx.Module):
    """Conv stem + transformer encoder over log-mel frames; causal decoder with cross-attention."""

    def __init__(self, c: Config, vocab_size: int, *, rngs: nnx.Rngs):
        self.config = c  # static: read by the loss and the decoders
        self.conv1 = nnx.Conv(c.n_mels, c.dim, (3,), padding=1, rngs=rngs)
        self.conv2 = nnx.Conv(c.dim, c.dim, (3,), strides=2, padding=1, rngs=rngs)
        self.encoder = Transformer(c.dim, c.encoder_depth, c.num_heads, rngs=rngs)
        init = nnx.initializers.normal(0.02)
        self.embed = nnx.Embed(vocab_size, c.dim, embedding_init=init, rngs=rngs)
        self.text_pos = nnx.Param(init(rngs.params(), (c.context_length, c.dim)))
        self.decoder = Transformer(c.dim, c.decoder_depth, c.num_heads, cross_dim=c.dim, rngs=rngs)

    def features(self, waveforms_BL: jax.Array) -> jax.Array:
        """Normalised log-mel spectrogram (B, F, M)."""
        return audio.log_mel(waveforms_BL, self.config.n_mels, hop=self.config.hop)

    def encode(self, mel_BFM: jax.Array) -> jax.Array:
        """Log-mel (B, F, M) -> audio features (B, S, D), S = F / 2."""
        x_BFD = jax.nn.gelu(self.conv1(mel_BFM))
        x_BSD = jax.nn.gelu(self.conv2(x_BFD))
        S, D = x_BSD.shape[1:]
        return self.encoder(x_BSD + timestep_embedding(jnp.arange(S), D)[None])

    def embed_tokens(self, tokens_BT: jax.Array, start: Any = 0) -> jax.Array:
        """Token + learned position embeddings of positions [start, start + T) (start may be traced): (B, T, D)."""
        pos_TD = jax.lax.dynamic_slice_in_dim(self.text_pos[...], start, tokens_BT.shape[1])
        return self.embed(tokens_BT) + pos_TD

    def head(self, y_BTD: jax.Array) -> jax.Array:
        """Logits (B, T, V) = y Eᵀ (the token embedding, tied)."""
        return self.embed.attend(y_BTD)

    def decode_logits(self, tokens_BT: jax.Array, audio_BSD: jax.Array) -> jax.Array:
        """Teacher-forced next-token logits (B, T, V): position t predicts token t + 1."""
        y_BTD = self.decoder(self.embed_tokens(tokens_BT), mask=causal_mask(tokens_BT.shape[1]),
                             context_BSD=audio_BSD)
        return self.head(y_BTD)

    def __call__(self, waveforms_BL: jax.Array, tokens_BT: jax.Array) -> jax.Array:
        return self.decode_logits(tokens_BT, self.encode(self.features(waveforms_BL)))


# --------------------------------------------------------------------------------------------- loss
def add_noise(rng: jax.Array, waveforms_BL: jax.Array, p: float, snr_min: float, snr_max: float) -> jax.Array:
    """White noise on a fraction p of the clips at SNR ~ U[snr_min, snr_max] dB, the signal power measured over
    the clip's non-zero samples (the speech, not its padding): σ² = P_signal / 10^(SNR / 10)."""
    k_pick, k_snr, k_noise = jax.random.split(rng, 3)
    B = waveforms_BL.shape[0]
    heard_BL = (waveforms_BL != 0).astype(jnp.float32)
    power_B = jnp.sum(waveforms_BL ** 2, axis=1) / jnp.maximum(heard_BL.sum(axis=1), 1.0)
    snr_B = jax.random.uniform(k_snr, (B,), minval=snr_min, maxval=snr_max)
    sigma_B = jnp.sqrt(power_B / 10 ** (snr_B / 10)) * jax.random.bernoulli(k_pick, p, (B,))
    return waveforms_BL + sigma_B[:, None] * jax.random.normal(k_noise, waveforms_BL.shape)


def spec_augment(rng: jax.Array, mel_BFM: jax.Array, bands: int = 2, max_band: int = 10, spans: int = 2,
                 max_span: int = 12) -> jax.Array:
    """SpecAugment-style masking: per clip, `bands` bands of up to `max_band` mels and `spans` spans of up to
    `max_span` frames set to 0 (the middle of the normalised range)."""
    B, F, M = mel_BFM.shape
    keys = jax.random.split(rng, 4)

    def masks(k_width, k_start, count, widest, size):
        width_BN = jax.random.randint(k_width, (B, count), 0, widest + 1)
        start_BN = jax.random.randint(k_start, (B, count), 0, size)
        where_BNZ = jnp.arange(size)[None, None]
        hit_BNZ = (where_BNZ >= start_BN[..., None]) & (where_BNZ < (start_BN + width_BN)[..., None])
        return hit_BNZ.any(axis=1)  # (B, size)

    mel_mask_BM = masks(keys[0], keys[1], bands, max_band, M)
    frame_mask_BF = masks(keys[2], keys[3], spans, max_span, F)
    return jnp.where(mel_mask_BM[:, None, :] | frame_mask_BF[:, :, None], 0.0, mel_BFM)


def smoothed_cross_entropy(logits_BTV: jax.Array, targets_BT: jax.Array, epsilon: float) -> jax.Array:
    """(1 - ε) · (-log p_target) + ε · mean_v(-log p_v), per position: (B, T)."""
    logp_BTV = jax.nn.log_softmax(logits_BTV.astype(jnp.float32), axis=-1)
    nll_BT = -jnp.take_along_axis(logp_BTV, targets_BT[..., None], axis=-1)[..., 0]
    return (1 - epsilon) * nll_BT - epsilon * logp_BTV.mean(axis=-1)


def loss_fn(model: Whisper, batch: dict[str, Any], rng: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Teacher-forced, label-smoothed cross-entropy of the transcript given the (augmented) audio."""
    c = model.config
    k_noise, k_mask = jax.random.split(rng)
    waveforms_BL, tokens_BT = batch["waveforms"], batch["tokens"]
    if c.noise_p > 0:
        waveforms_BL = add_noise(k_noise, waveforms_BL, c.noise_p, c.noise_snr_min, c.noise_snr_max)
    mel_BFM = model.features(waveforms_BL)
    if c.spec_augment:
        mel_BFM = spec_augment(k_mask, mel_BFM)
    logits_BTV = model.decode_logits(tokens_BT[:, :-1], model.encode(mel_BFM))
    targets_BT = tokens_BT[:, 1:]
    keep_BT = (targets_BT != PAD_ID).astype(jnp.float32)
    ce_BT = smoothed_cross_entropy(logits_BTV, targets_BT, c.label_smoothing)
    loss = jnp.sum(ce_BT * keep_BT) / jnp.maximum(keep_BT.sum(), 1.0)
    correct = (jnp.argmax(logits_BTV, -1) == targets_BT).astype(jnp.float32)
    return loss, {"token_accuracy": jnp.sum(correct * keep_BT) / jnp.maximum(keep_BT.sum(), 1.0)}


# ----------------------------------------------------------------------------------------- decoding
def _step_logits(model: Whisper, tokens_XT: jax.Array, t: Any, audio_XSD: jax.Array, state, cached: bool):
    """Log-probabilities (X, V) of the token after position t, and the new decoding state.

    cached: state = (self-attention cache, cross-attention keys/values); one position through the decoder.
    uncached: state = None; the whole prefix through the decoder (its later positions are masked out)."""
    if cached:
        cache, context_kv = state
        token_X1 = jax.lax.dynamic_slice_in_dim(tokens_XT, t, 1, axis=1)
        y_X1D, cache = model.decoder.decode(model.embed_tokens(token_X1, t), cache, t, context_kv=context_kv)
        logits_XV = model.head(y_X1D[:, 0])
        state = (cache, context_kv)
    else:
        logits_XV = jax.lax.dynamic_index_in_dim(model.decode_logits(tokens_XT, audio_XSD), t, 1, keepdims=False)
    return jax.nn.log_softmax(logits_XV.astype(jnp.float32), axis=-1), state


def _start_state(model: Whisper, audio_XSD: jax.Array, T: int, cached: bool):
    if not cached:
        return None
    return model.decoder.init_cache(audio_XSD.shape[0], T, audio_XSD.dtype), model.decoder.context_kv(audio_XSD)


def greedy_decode(model: Whisper, audio_BSD: jax.Array, cached: bool = True) -> jax.Array:
    """Token ids int32 (B, T): BOS, then the argmax token at each step; PAD after EOS."""
    B, T = audio_BSD.shape[0], model.config.context_length
    tokens_BT = jnp.full((B, T), PAD_ID, jnp.int32).at[:, 0].set(BOS_ID)

    def unfinished(carry):
        t, _, done_B, _ = carry
        return (t < T - 1) & ~jnp.all(done_B)

    def step(carry):
        t, tokens_BT, done_B, state = carry
        logp_BV, state = _step_logits(model, tokens_BT, t, audio_BSD, state, cached)
        next_B = jnp.where(done_B, PAD_ID, jnp.argmax(logp_BV, axis=-1).astype(jnp.int32))
        tokens_BT = jax.lax.dynamic_update_slice_in_dim(tokens_BT, next_B[:, None], t + 1, axis=1)
        return t + 1, tokens_BT, done_B | (next_B == EOS_ID), state

    start = (jnp.int32(0), tokens_BT, jnp.zeros((B,), bool), _start_state(model, audio_BSD, T, cached))
    return jax.lax.while_loop(unfinished, step, start)[1]


def beam_decode(model: Whisper, audio_BSD: jax.Array, beam_size: int, length_penalty: float = 1.0,
                cached: bool = True) -> jax.Array:
    """Beam search -> token ids int32 (B, T) of each utterance's best beam by Σ log p / length^α."""
    B, S, D = audio_BSD.shape
    W, T = beam_size, model.config.context_length
    X = B * W
    audio_XSD = jnp.repeat(audio_BSD, W, axis=0)  # row b·W + w is beam w of utterance b
    tokens_BWT = jnp.full((B, W, T), PAD_ID, jnp.int32).at[:, :, 0].set(BOS_ID)
    scores_BW = jnp.tile(jnp.array([0.0] + [-jnp.inf] * (W - 1), jnp.float32), (B, 1))  # one live beam at first
    lengths_BW = jnp.zeros((B, W), jnp.float32)  # tokens said, EOS included

    def unfinished(carry):
        t, _, _, _, done_BW, _ = carry
        return (t < T - 1) & ~jnp.all(done_BW)

    def step(carry):
        t, tokens_BWT, scores_BW, lengths_BW, done_BW, state = carry
        logp_XV, state = _step_logits(model, tokens_BWT.reshape(X, T), t, audio_XSD, state, cached)
        V = logp_XV.shape[-1]
        logp_BWV = logp_XV.reshape(B, W, V)
        pad_only_V = jnp.where(jnp.arange(V) == PAD_ID, 0.0, -jnp.inf)  # a finished beam: PAD, no cost
        logp_BWV = jnp.where(done_BW[..., None], pad_only_V, logp_BWV)
        scores_BW, flat_BW = jax.lax.top_k((scores_BW[..., None] + logp_BWV).reshape(B, W * V), W)
        parent_BW, next_BW = flat_BW // V, (flat_BW % V).astype(jnp.int32)
        pick = lambda a: jnp.take_along_axis(a, parent_BW.reshape(B, W, *[1] * (a.ndim - 2)), axis=1)  # noqa: E731
        tokens_BWT = jax.lax.dynamic_update_slice_in_dim(pick(tokens_BWT), next_BW[..., None], t + 1, axis=2)
        was_done_BW = pick(done_BW)
        lengths_BW = pick(lengths_BW) + (~was_done_BW)
        if cached:  # each beam continues from its parent's self-attention cache
            cache, context_kv = state
            cache = jax.tree.map(lambda c: pick(c.reshape(B, W, *c.shape[1:])).reshape(c.shape), cache)
            state = (cache, context_kv)
        return t + 1, tokens_BWT, scores_BW, lengths_BW, was_done_BW | (next_BW == EOS_ID), state

    start = (jnp.int32(0), tokens_BWT, scores_BW, lengths_BW, jnp.zeros((B, W), bool),
             _start_state(model, audio_XSD, T, cached))
    _, tokens_BWT, scores_BW, lengths_BW, _, _ = jax.lax.while_loop(unfinished, step, start)
    best_B = jnp.argmax(scores_BW / jnp.maximum(lengths_BW, 1.0) ** length_penalty, axis=1)
    return tokens_BWT[jnp.arange(B), best_B]


@functools.partial(jax.jit, static_argnames=("graphdef", "beam_size", "cached"))
def _transcribe_jit(graphdef, state, waveforms_BL, length_penalty, beam_size: int, cached: bool):
    model = nnx.merge(graphdef, state)
    audio_BSD = model.encode(model.features(waveforms_BL))
    if beam_size == 1:
        return greedy_decode(model, audio_BSD, cached)
    return beam_decode(model, audio_BSD, beam_size, length_penalty, cached)


def decode_tokens(model: Whisper, waveforms_BL, *, beam_size: int = 1, length_penalty: float = 1.0,
                  cached: bool = True) -> jax.Array:
    """Compiled transcription of float32 waveforms (B, L) -> token ids int32 (B, T) (greedy if beam_size = 1)."""
    graphdef, state = nnx.split(model)
    return _transcribe_jit(graphdef, state, jnp.asarray(waveforms_BL, jnp.float32), jnp.float32(length_penalty),
                           int(beam_size), bool(cached))


def tokens_to_text(tokenizer: Any, tokens_BT: np.ndarray) -> list[str]:
    """Ids (B, T) -> strings: the ids after BOS up to EOS, decoded (specials skipped)."""
    texts = []
    for row in np.asarray(tokens_BT).tolist():
        body = row[1:]
        texts.append(tokenizer.decode(body[:body.index(EOS_ID)] if EOS_ID in body else body).strip())
    return texts


# ---------------------------------------------------------------------------------- data and pipeline
def prepare(config: Config, examples: dict[str, Any], tokenizer: Any, workdir: str | Path) -> dict[str, Any]:
    """Check the examples carry speech and zero-pad their waveforms to `audio_seconds`."""
    if "waveforms" not in examples:
        raise ValueError(f"whisper trains on speech, but --data {config.data} has no waveforms: use "
                         "--data spoken_shapes or folder:PATH with WAV files and a captions file")
    waveforms_NL = examples["waveforms"]
    L = config.samples
    if waveforms_NL.shape[1] > L:
        longest = int(np.max(np.nonzero(waveforms_NL.any(axis=0))[0], initial=0)) + 1
        if longest > L:
            raise ValueError(f"the training clips last up to {longest / audio.SAMPLE_RATE:.2f} s but "
                             f"audio_seconds={config.audio_seconds}: raise audio_seconds")
        waveforms_NL = waveforms_NL[:, :L]
    elif waveforms_NL.shape[1] < L:
        waveforms_NL = np.pad(waveforms_NL, ((0, 0), (0, L - waveforms_NL.shape[1])))
    examples = {k: v for k, v in examples.items() if k != "images"}  # speech only: no pictures in the batches
    return {**examples, "waveforms": waveforms_NL}


def build(config: Config, tokenizer: Any, rngs: nnx.Rngs) -> Whisper:
    return Whisper(config, tokenizer.vocab_size, rngs=rngs)


@dataclasses.dataclass
class Pipeline:
    """What `minimodal.load(workdir)` returns for Whisper: `transcribe(waveforms_or_paths) -> list[str]`."""

    model: Whisper
    config: Config
    tokenizer: Any

    @checked_options
    def transcribe(self, waveforms_or_paths: Any, sample_rate: int = audio.SAMPLE_RATE, *,
                   beam_size: int | None = None, batch_size: int = 64, cached: bool = True) -> list[str]:
        """Transcripts of WAV paths or float waveforms in [-1, 1] at `sample_rate` (a list, a 2-D array, or one
        of them). `beam_size`: 1 = greedy; default the config's. Clips are zero-padded to `audio_seconds`."""
        clips, names = _clips(waveforms_or_paths, sample_rate)
        beam = self.config.beam_size if beam_size is None else beam_size
        if beam < 1 or batch_size < 1:
            raise ValueError(f"beam_size and batch_size must be at least 1, got {beam} and {batch_size}")
        waveforms_NL = audio.fit_length(clips, self.config.samples, names)
        n = len(waveforms_NL)
        if n > batch_size:  # silent clips fill the last batch: every batch has one shape, compiled once
            waveforms_NL = np.pad(waveforms_NL, ((0, -n % batch_size), (0, 0)))
        texts: list[str] = []
        for i in range(0, len(waveforms_NL), batch_size):
            tokens_BT = decode_tokens(self.model, waveforms_NL[i:i + batch_size], beam_size=beam,
                                      length_penalty=self.config.length_penalty, cached=cached)
            texts += tokens_to_text(self.tokenizer, np.asarray(tokens_BT))
        return texts[:n]


def _clips(items: Any, sample_rate: int) -> tuple[list[np.ndarray], list[str]]:
    """Float waveforms at 16 kHz, and a name for each, from paths / arrays (one or many)."""
    if sample_rate < 1:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if isinstance(items, (str, Path)) or (isinstance(items, np.ndarray) and items.ndim == 1):
        items = [items]
    elif isinstance(items, np.ndarray) and items.ndim != 2:
        raise ValueError(f"waveforms must be (L,) or (N, L); got shape {items.shape}")
    if len(items) == 0:
        raise ValueError("transcribe needs at least one waveform or WAV path")
    clips, names = [], []
    for k, item in enumerate(items):
        if isinstance(item, (str, Path)):
            clips.append(audio.read_wav(item))
            names.append(str(item))
        else:
            x = np.asarray(item)
            if x.ndim != 1 or not np.issubdtype(x.dtype, np.floating):
                raise ValueError(f"waveform {k} must be a 1-D float array in [-1, 1]; got {x.dtype} {x.shape}")
            clips.append(audio.resample(x, sample_rate))
            names.append(f"waveform {k}")
    return clips, names


def pipeline(model, config: Config, tokenizer: Any, workdir: str | Path) -> Pipeline:
    return Pipeline(model, config, tokenizer)


def evaluate(model, config: Config, tokenizer: Any, workdir: str | Path) -> dict[str, float]:
    """WER and CER on `eval_n` utterances of each spoken_shapes split (test: training voices; holdout: voices and
    rates never heard; unseen: accents and voices never used), clean and with noise at `eval_snr_db`, greedy and
    beam. Keys: wer_<split>[_noisy][_beam], cer_... ."""
    from minimodal.data import spoken_shapes
    from minimodal.metrics import char_error_rate, word_error_rate

    if config.data.partition(":")[0] != "spoken_shapes":
        raise ValueError(f"the evaluation uses spoken_shapes' splits; this model was trained on {config.data!r}")
    pipe = pipeline(model, config, tokenizer, workdir)
    metrics = {}
    for split in ("test", "holdout", "unseen"):
        for suffix, snr in (("", None), ("_noisy", config.eval_snr_db)):
            data = spoken_shapes.generate(config.eval_n, config.seed, split, seconds=config.audio_seconds,
                                          snr_db=snr)
            waveforms = list(data["waveforms"].astype(np.float32) / 32768)
            for decoder, beam in (("", 1), ("_beam", config.beam_size)):
                texts = pipe.transcribe(waveforms, beam_size=beam)
                metrics[f"wer_{split}{suffix}{decoder}"] = word_error_rate(data["captions"], texts)
                metrics[f"cer_{split}{suffix}{decoder}"] = char_error_rate(data["captions"], texts)
    return metrics


FAMILY = Family(name="whisper", config_class=Config, presets=PRESETS, build=build, loss_fn=loss_fn,
                prepare=prepare, evaluate=evaluate, pipeline=pipeline)
