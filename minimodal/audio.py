"""Audio: WAV files, resampling, and the log-mel spectrogram front end (in JAX) that Whisper listens through.

Legend: B batch, L samples, F frames, N FFT size, R frequency bins (N/2 + 1), M mel bands.

At SAMPLE_RATE = 16 kHz, as in Whisper:
    frames      x_t[n] = x[t·HOP + n - N/2],  n < N = 400 (25 ms), HOP = 160 (10 ms), t < F = L // HOP
                (the signal is zero-padded by N/2 on both sides, so frame t is centred on sample t·HOP)
    window      w[n] = 0.5 - 0.5 cos(2π n / N)                  (periodic Hann)
    spectrum    P_t[r] = |Σ_n w[n] x_t[n] e^{-2πi r n / N}|²,   r = 0 .. N/2
    mel scale   mel(f) = 2595 log10(1 + f / 700)                (HTK)
    filter bank M triangles, centres equally spaced in mel between 0 Hz and the Nyquist frequency,
                each rising 0 -> 1 from its left neighbour's centre to its own and back to 0 at the right one's
    log         S_t[m] = log10(max(Σ_r fb[m, r] P_t[r], 1e-10))
    normalise   S <- (max(S, max(S) - 8) + 4) / 4                (per utterance: an 80 dB range, then ~[-1, 1])
Silence gives the floor: S = -10 everywhere, so (−10 + 4) / 4 = −1.5.
"""

from __future__ import annotations

import wave
from fractions import Fraction
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

SAMPLE_RATE = 16_000
N_FFT = 400
HOP = 160
N_MELS = 80
LOG_FLOOR = 1e-10
DYNAMIC_RANGE = 8.0  # log10 units: 80 dB
SILENCE_LEVEL = (np.log10(LOG_FLOOR) + 4) / 4  # -1.5: what silence becomes after `log_mel`


class AudioFileError(ValueError):
    """An audio file that cannot be read as a WAV waveform."""


# ---------------------------------------------------------------------------------------- waveforms (numpy)

def resample(x_L: np.ndarray, from_rate: int, to_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited resampling by a rational factor (polyphase FIR, scipy): float32 (L · to / from,)."""
    from scipy.signal import resample_poly

    x_L = np.asarray(x_L, np.float32)
    if from_rate == to_rate:
        return x_L
    ratio = Fraction(int(to_rate), int(from_rate))
    return resample_poly(x_L, ratio.numerator, ratio.denominator).astype(np.float32)


def read_wav(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A WAV file (PCM 8/16/24/32-bit or float, mono or multi-channel, any rate) -> float32 (L,) in [-1, 1] at
    `sample_rate`; channels are averaged. Unreadable files raise an `AudioFileError` naming the file."""
    from scipy.io import wavfile

    path = Path(path)
    if not path.is_file():
        raise AudioFileError(f"{path}: no such audio file")
    try:
        rate, data = wavfile.read(path)
    except (ValueError, OSError, EOFError, wave.Error) as error:
        raise AudioFileError(f"{path}: not a readable WAV file ({error}); convert it to 16-bit PCM WAV, e.g. "
                             "`ffmpeg -i in.m4a -ac 1 -ar 16000 out.wav`") from None
    if data.dtype == np.uint8:  # 8-bit WAV is unsigned
        x = (data.astype(np.float32) - 128) / 128
    elif np.issubdtype(data.dtype, np.integer):
        x = data.astype(np.float32) / float(-np.iinfo(data.dtype).min)
    else:
        x = data.astype(np.float32)
    if x.ndim == 2:
        x = x.mean(axis=1)
    if x.size == 0:
        raise AudioFileError(f"{path}: the WAV file holds no samples")
    return resample(x, rate, sample_rate)


def to_pcm(x: np.ndarray) -> np.ndarray:
    """float [-1, 1] -> int16 PCM: round(x · 32768), clipped to [-32768, 32767]."""
    return np.clip(np.rint(np.asarray(x, np.float64) * 32768), -32768, 32767).astype(np.int16)


def write_wav(path: str | Path, x_L: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    """float waveform in [-1, 1] -> 16-bit mono PCM WAV file."""
    pcm = to_pcm(x_L).astype("<i2")
    path = Path(path)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(sample_rate)
        f.writeframes(pcm.tobytes())
    return path


# ------------------------------------------------------------------------------------------- log-mel (JAX)

def hann_window(n: int = N_FFT) -> np.ndarray:
    """Periodic Hann window: w[k] = 0.5 - 0.5 cos(2π k / n), float32 (n,)."""
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)).astype(np.float32)


def hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, np.float64) / 700.0)


def mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, np.float64) / 2595.0) - 1.0)


def mel_centres(n_mels: int = N_MELS, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Centre frequencies (Hz) of the M triangles: (M,)."""
    return mel_to_hz(np.linspace(0, hz_to_mel(sample_rate / 2), n_mels + 2))[1:-1]


def mel_filterbank(n_mels: int = N_MELS, n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Triangular filters float32 (M, R): row m rises linearly from edge m to peak 1 at edge m+1 and falls
    to 0 at edge m+2, with M + 2 edges equally spaced in mel from 0 Hz to sample_rate / 2."""
    edges_Hz = mel_to_hz(np.linspace(0, hz_to_mel(sample_rate / 2), n_mels + 2))  # (M + 2,)
    freqs_R = np.arange(n_fft // 2 + 1) * sample_rate / n_fft
    lo, mid, hi = edges_Hz[:-2, None], edges_Hz[1:-1, None], edges_Hz[2:, None]
    rising_MR = (freqs_R[None] - lo) / (mid - lo)
    falling_MR = (hi - freqs_R[None]) / (hi - mid)
    return np.maximum(0.0, np.minimum(rising_MR, falling_MR)).astype(np.float32)


def frames(x_BL: jax.Array, n_fft: int = N_FFT, hop: int = HOP) -> jax.Array:
    """Overlapping frames (B, F, N), F = L // hop, frame t centred on sample t·hop (zero padding by N/2)."""
    B, L = x_BL.shape
    F = L // hop
    padded_BP = jnp.pad(x_BL, ((0, 0), (n_fft // 2, n_fft // 2)))
    index_FN = hop * jnp.arange(F)[:, None] + jnp.arange(n_fft)[None, :]
    return padded_BP[:, index_FN]


def power_spectrum(x_BL: jax.Array, n_fft: int = N_FFT, hop: int = HOP) -> jax.Array:
    """|rFFT(window · frame)|²: float32 (B, F, R)."""
    spec_BFR = jnp.fft.rfft(frames(x_BL, n_fft, hop) * hann_window(n_fft), axis=-1)
    return jnp.real(spec_BFR) ** 2 + jnp.imag(spec_BFR) ** 2


def log_mel(x_BL: jax.Array, n_mels: int = N_MELS, n_fft: int = N_FFT, hop: int = HOP,
            sample_rate: int = SAMPLE_RATE) -> jax.Array:
    """Normalised log-mel spectrogram float32 (B, F, M) of waveforms (B, L) in [-1, 1] (see the module doc)."""
    fb_MR = jnp.asarray(mel_filterbank(n_mels, n_fft, sample_rate))
    mel_BFM = jnp.einsum("bfr,mr->bfm", power_spectrum(x_BL.astype(jnp.float32), n_fft, hop), fb_MR)
    log_BFM = jnp.log10(jnp.maximum(mel_BFM, LOG_FLOOR))
    log_BFM = jnp.maximum(log_BFM, log_BFM.max(axis=(1, 2), keepdims=True) - DYNAMIC_RANGE)
    return (log_BFM + 4.0) / 4.0


def fit_length(waveforms: list[np.ndarray], length: int, names: list[str] | None = None) -> np.ndarray:
    """Zero-pad each float waveform to `length` samples: float32 (N, length). A longer one is an error that
    names it (cutting it would cut words off its transcript)."""
    out = np.zeros((len(waveforms), length), np.float32)
    for i, x in enumerate(waveforms):
        x = np.asarray(x, np.float32).reshape(-1)
        if x.size > length:
            name = names[i] if names else f"waveform {i}"
            raise ValueError(f"{name} is {x.size / SAMPLE_RATE:.2f} s long; this model hears at most "
                             f"{length / SAMPLE_RATE:.2f} s (audio_seconds): cut it into shorter clips")
        out[i, :x.size] = x
    return out
