# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 07 · Speech to text: a small Whisper
#
# **Expected run time:** about 1.5 minutes on a 2-core CPU when `runs/whisper` was trained beforehand by the
# CLI command below (measured: 81 s; training it here instead adds about 15 minutes); fast mode (`MINIMODAL_FAST=1`, a tiny
# model that learns nothing useful): under 90 seconds.
#
#     minimodal train whisper --data spoken_shapes --workdir runs/whisper    # then: minimodal eval whisper
#
# The assistant this project builds towards hears a request before it draws. Whisper (Radford et al., 2022)
# turns speech into text with the same parts as the rest of minimodal: a **log-mel spectrogram** (the sound
# as a picture of energy over time and pitch), a transformer **encoder** over its frames, and a causal text
# **decoder** that writes the shared BPE tokenizer's ids while it **cross-attends** to the encoder.
# Our speech comes from eSpeak NG, a formant synthesiser that ships with its voices: every `shapes`
# caption can be spoken offline by dozens of English voices, at any rate and pitch.
#
# 1. A waveform, and its spectrogram built step by step (frames, window, FFT, mel scale), each checked
#    against the library's JAX version.
# 2. What the encoder sees and gives.
# 3. Where the decoder listens while it writes each word (cross-attention over time).
# 4. Errors on voices and speaking rates the model never heard, with and without noise; greedy vs beam.
# 5. Type a sentence for eSpeak to say (or record your own WAV) and transcribe it.

# %%
import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Audio, display

import minimodal
from minimodal import audio, whisper
from minimodal.data import spoken_shapes
from minimodal.lessons import FAST, preset, workdir
from minimodal.metrics import char_error_rate, word_error_rate
from minimodal.tokenizer import EOS_ID
from minimodal.train import fit

PRESET = preset()
CONFIG = whisper.PRESETS[PRESET]
WORKDIR = workdir("whisper", PRESET)
N_EVAL = 4 if FAST else 100

# Trains the model, or resumes / reloads what the CLI command above already trained with the same config.
run = fit(whisper.FAMILY, CONFIG, WORKDIR, progress=False)
pipe = minimodal.load(WORKDIR)
print(f"preset {PRESET!r}: {WORKDIR}, step {run.step}; vocabulary {pipe.tokenizer.vocab_size} ids, "
      f"{CONFIG.audio_seconds:.0f} s clips")

# %% [markdown]
# ## 1. A waveform and its spectrogram
#
# Sound is air pressure over time: a microphone (or eSpeak) gives one number per sample, 16,000 per second
# here. One `spoken_shapes` example is a caption from `shapes`, spoken by a voice drawn for it.

# %%
clip = spoken_shapes.generate(1, seed=0, split="test")
x_L = clip["waveforms"][0].astype(np.float32) / 32768  # int16 PCM -> [-1, 1)
print(f"{clip['captions'][0]!r}, said by {clip['voices'][0]} at {clip['rates'][0]} words per minute")
display(Audio(x_L, rate=audio.SAMPLE_RATE))
plt.figure(figsize=(10, 2))
plt.plot(np.arange(len(x_L)) / audio.SAMPLE_RATE, x_L, lw=0.3)
plt.xlabel("seconds")
plt.title("the waveform")
plt.show()

# %% [markdown]
# Speech changes every few tens of milliseconds, so we look at it through short, overlapping **frames**:
# 400 samples (25 ms) every `hop` samples, centred on the frame time. Each frame is multiplied by a **Hann
# window** $w[n] = \tfrac12 - \tfrac12\cos(2\pi n/N)$ so that its edges fade to zero (cutting a wave abruptly
# would add frequencies it does not have), then the **FFT** gives its power at each of $N/2+1$ frequencies:
# $P_t[r] = |\sum_n w[n]\,x_t[n]\,e^{-2\pi i rn/N}|^2$. Written in numpy and checked against the library:

# %%
N, HOP = audio.N_FFT, CONFIG.hop
padded = np.pad(x_L, N // 2)
frames_FN = np.stack([padded[t * HOP:t * HOP + N] for t in range(len(x_L) // HOP)])
window_N = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N) / N)
power_FR = np.abs(np.fft.rfft(frames_FN * window_N, axis=1)) ** 2
np.testing.assert_allclose(np.asarray(audio.frames(x_L[None], N, HOP))[0], frames_FN)
np.testing.assert_allclose(np.asarray(audio.power_spectrum(x_L[None], N, HOP))[0], power_FR,
                           rtol=1e-3, atol=1e-3 * power_FR.max())
print(f"{frames_FN.shape[0]} frames of {N} samples -> power spectra of {power_FR.shape[1]} frequencies "
      f"({audio.SAMPLE_RATE / N:.0f} Hz apart)")

# %% [markdown]
# Our ears resolve low pitches finely and high ones coarsely. The **mel scale**
# $m(f) = 2595\log_{10}(1 + f/700)$ spaces filters the way we hear: `n_mels` triangles, equally spaced in mel,
# each summing the power of the frequencies under it. Then a **log** (loudness is heard logarithmically),
# an 80 dB range below the loudest point, and a shift to about [-1, 1]: the log-mel spectrogram.

# %%
bank_MR = audio.mel_filterbank(CONFIG.n_mels)
log_FM = np.log10(np.maximum(power_FR @ bank_MR.T, 1e-10))
mel_FM = (np.maximum(log_FM, log_FM.max() - 8) + 4) / 4
library_FM = np.asarray(audio.log_mel(x_L[None], CONFIG.n_mels, hop=HOP))[0]
np.testing.assert_allclose(library_FM, mel_FM, atol=2e-3)

fig, axes = plt.subplots(1, 2, figsize=(11, 3), gridspec_kw={"width_ratios": [1, 2.5]})
freqs = np.arange(bank_MR.shape[1]) * audio.SAMPLE_RATE / N
axes[0].plot(freqs, bank_MR[::4].T, lw=0.8)
axes[0].set(title="every 4th mel filter", xlabel="Hz")
axes[1].imshow(mel_FM.T, origin="lower", aspect="auto", cmap="magma",
               extent=(0, len(x_L) / audio.SAMPLE_RATE, 0, CONFIG.n_mels))
axes[1].set(title=f"log-mel spectrogram: {clip['captions'][0]!r}", xlabel="seconds", ylabel="mel band")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 2. What the encoder sees
#
# The encoder reads the spectrogram as a sequence of frames: two 1-D convolutions (kernel 3, the second with
# stride 2, halving the frame rate) turn each frame's `n_mels` numbers into a `dim`-wide vector, sinusoidal
# positions are added, and transformer blocks let every position look at every other. Silence and speech
# come out clearly different: below, the norm of each encoder position over time, against the waveform.

# %%
audio_SD = np.asarray(pipe.model.encode(jnp.asarray(library_FM[None])))[0]
print(f"log-mel {library_FM.shape} -> encoder output {audio_SD.shape} "
      f"({1000 * CONFIG.audio_seconds / audio_SD.shape[0]:.0f} ms per position)")
fig, axes = plt.subplots(2, 1, figsize=(10, 3.5), sharex=True)
axes[0].plot(np.arange(len(x_L)) / audio.SAMPLE_RATE, x_L, lw=0.3)
axes[0].set(ylabel="waveform")
times = (np.arange(audio_SD.shape[0]) + 0.5) * CONFIG.audio_seconds / audio_SD.shape[0]
axes[1].imshow(audio_SD.T, aspect="auto", cmap="coolwarm", extent=(0, CONFIG.audio_seconds, 0, audio_SD.shape[1]))
axes[1].set(ylabel="feature", xlabel="seconds")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 3. Where the decoder listens while it writes
#
# The decoder writes one token at a time. In each block, after causal self-attention over the words so far,
# **cross-attention** lets the next word's query look at every encoder position:
# $\mathrm{softmax}(q\,K^\top/\sqrt{d})$ over time. We re-run the last block by hand to read those weights
# (and check that the hand-made block gives the library's output).

# %%
tokens_T = whisper.decode_tokens(pipe.model, x_L[None], beam_size=1)[0]
said = list(np.asarray(tokens_T)).index(EOS_ID) if EOS_ID in tokens_T else len(tokens_T)  # position of EOS
tokens_1T = jnp.asarray(tokens_T[None, :max(said, 1)])
audio_1SD = jnp.asarray(audio_SD[None])
model = pipe.model
x_1TD = model.embed_tokens(tokens_1T)
mask = jnp.tril(jnp.ones((tokens_1T.shape[1],) * 2, bool))
for block in model.decoder.blocks[:-1]:
    x_1TD = block(x_1TD, mask=mask, context_BSD=audio_1SD)
last = model.decoder.blocks[-1]
expected = last(x_1TD, mask=mask, context_BSD=audio_1SD)
x_1TD = x_1TD + last.attn(last.ln_attn(x_1TD), mask=mask)  # x <- x + SelfAttn(LN(x))
H = model.config.num_heads
q_1THK = last.cross.q(last.ln_cross(x_1TD)).reshape(1, -1, H, model.config.dim // H)
k_1SHK, v_1SHK = last.cross.context_kv(audio_1SD)
weights_HTS = jax.nn.softmax(jnp.einsum("bthk,bshk->bhts", q_1THK, k_1SHK)[0] / np.sqrt(q_1THK.shape[-1]), -1)
y_1TD = x_1TD + last.cross.merge(jnp.einsum("hts,bshk->bthk", weights_HTS, v_1SHK))
y_1TD = y_1TD + last.fc2(jax.nn.gelu(last.fc1(last.ln_mlp(y_1TD))))
np.testing.assert_allclose(y_1TD, expected, atol=1e-4)

words = [pipe.tokenizer.decode([int(t)]) for t in np.asarray(tokens_1T[0, 1:])] + ["<eos>"]
plt.figure(figsize=(10, 3))
plt.imshow(np.asarray(weights_HTS.mean(0)), aspect="auto", cmap="viridis",
           extent=(0, CONFIG.audio_seconds, len(words) - 0.5, -0.5))
plt.yticks(range(len(words)), words)
plt.xlabel("seconds")
plt.title("cross-attention of the last decoder block (mean over heads): the query that writes each token")
plt.show()
print("heard:", whisper.tokens_to_text(pipe.tokenizer, np.asarray(tokens_T)[None])[0])

# %% [markdown]
# ## 4. Voices it never heard
#
# `spoken_shapes` keeps voices apart: `test` uses the training voices and rates (new utterances); `holdout`
# uses voice variants never heard, at speaking rates outside the training range (slower than 140 or faster
# than 220 words per minute); `unseen` uses other English accents and variants altogether. We score word and
# character error rates, clean and with white noise at 10 dB SNR, greedy and with a beam of 4.

# %%
rows, errors = [], {}
for split in ("test", "holdout", "unseen"):
    for snr in (None, 10.0):
        data = spoken_shapes.generate(N_EVAL, seed=CONFIG.seed, split=split, snr_db=snr)
        clips = list(data["waveforms"].astype(np.float32) / 32768)
        for beam in (1, 4):
            texts = pipe.transcribe(clips, beam_size=beam)
            rows.append((split, "clean" if snr is None else f"{snr:.0f} dB", "greedy" if beam == 1 else "beam 4",
                         word_error_rate(data["captions"], texts), char_error_rate(data["captions"], texts)))
            if beam == 1 and snr is None:
                errors[split] = [(r, h, v) for r, h, v in zip(data["captions"], texts, data["voices"]) if r != h]
print(f"{'split':8s} {'noise':6s} {'decoder':7s}    WER    CER")
for split, noise, decoder, wer, cer in rows:
    print(f"{split:8s} {noise:6s} {decoder:7s} {wer:6.1%} {cer:6.1%}")
for split, wrong in errors.items():
    print(f"\n{split}: {len(wrong)} of {N_EVAL} utterances not exactly right; e.g.")
    for ref, hyp, voice in wrong[:3]:
        print(f"   {voice:22s} said {ref!r}\n   {'':22s} heard {hyp!r}")

# %% [markdown]
# The KV cache: each decoding step feeds one token through the decoder against the cached keys and values of
# the earlier ones, and the audio's cross-attention keys/values are projected once per utterance. Without it,
# every step re-runs the decoder over the whole prefix. Both are one compiled loop and give the same words.

# %%
batch = np.stack(clips[:8]) if len(clips) >= 8 else np.stack(clips)
for cached in (True, False):
    whisper.decode_tokens(pipe.model, batch, cached=cached).block_until_ready()  # compile
    start = time.perf_counter()
    out = whisper.decode_tokens(pipe.model, batch, cached=cached).block_until_ready()
    seconds = time.perf_counter() - start
    print(f"KV cache {'on ' if cached else 'off'}: {seconds * 1000:6.1f} ms for {len(batch)} clips of "
          f"{CONFIG.audio_seconds:.0f} s (real-time factor {seconds / (len(batch) * CONFIG.audio_seconds):.4f})")

# %% [markdown]
# ## 5. Say something
#
# Type a sentence for eSpeak to say in a voice from outside the training set, or record your own: save a WAV
# file (any rate; mono or stereo) and pass its path, e.g. `pipe.transcribe(["me.wav"])`, or from a shell
# `minimodal transcribe --workdir runs/whisper me.wav`. The model knows only the words of shapes captions.

# %%
SENTENCE = "a small green cross at the top right"
VOICE = "en-gb-scotland+m8"  # an accent and a variant the training never used
said_L = spoken_shapes.speak(SENTENCE, {"voice": VOICE, "rate": 170, "pitch": 50, "pitch_range": 50,
                                        "peak": 0.5, "lead": 0.2}, CONFIG.samples)
display(Audio(said_L, rate=audio.SAMPLE_RATE))
for beam in (1, 4):
    print(f"{'greedy' if beam == 1 else 'beam 4'}: {pipe.transcribe([said_L], beam_size=beam)[0]!r}")

# %% [markdown]
# ## What you should have seen
#
# (Numbers of the recorded full run, 2026-12-02, 2-core CPU, `runs/whisper` trained by the default command;
# fast mode prints other, meaningless ones.)
#
# - The numpy spectrogram equals the library's JAX `log_mel` to 2e-3; speech shows as bright bands rising
#   and falling over time, silence as the flat floor.
# - The encoder turns 200 frames into 100 positions (40 ms each); the decoder's cross-attention moves from
#   left to right across the utterance as it writes the words, one after another.
# - Word error rates on 100 utterances per split, greedy (beam 4 within 0.4 points of it): **0.6%** on `test`
#   (training voices), **6.3%** on `holdout` (voices and speaking rates never heard), **4.6%** on `unseen`
#   (accents and voices never used); with white noise at 10 dB SNR 18%, 30% and 24%: the model trained on
#   noise in only 1 clip of 5, mostly milder. Most errors swap one colour word (blue ↔ purple, green ↔ blue).
# - Greedy decoding of 8 clips took 18 ms with the KV cache and 41 ms without (real-time factor 0.0005), with
#   the same transcripts; the typed sentence, said by a Scottish-accented voice variant never heard, came back
#   word for word.
