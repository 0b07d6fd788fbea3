"""The log-mel front end against an independent numpy computation and known properties; WAV files; resampling."""

from __future__ import annotations

import wave

import numpy as np
import pytest

from minimodal import audio


def numpy_log_mel(x_L: np.ndarray, n_mels: int, n_fft: int = 400, hop: int = 160, rate: int = 16_000) -> np.ndarray:
    """The same spectrogram written independently: frame by frame, numpy's FFT, filters bin by bin."""
    window = np.hanning(n_fft + 1)[:-1]  # the periodic Hann window
    padded = np.concatenate([np.zeros(n_fft // 2), x_L, np.zeros(n_fft // 2)])
    spectra = np.stack([np.abs(np.fft.fft(padded[t * hop:t * hop + n_fft] * window)[:n_fft // 2 + 1]) ** 2
                        for t in range(len(x_L) // hop)])  # (F, R)
    mel = lambda f: 2595 * np.log10(1 + f / 700)  # noqa: E731
    edges = 700 * (10 ** (np.linspace(0, mel(rate / 2), n_mels + 2) / 2595) - 1)
    bank = np.zeros((n_mels, n_fft // 2 + 1))
    for m in range(n_mels):
        for r in range(n_fft // 2 + 1):
            f = r * rate / n_fft
            if edges[m] <= f <= edges[m + 1]:
                bank[m, r] = (f - edges[m]) / (edges[m + 1] - edges[m])
            elif edges[m + 1] < f <= edges[m + 2]:
                bank[m, r] = (edges[m + 2] - f) / (edges[m + 2] - edges[m + 1])
    log = np.log10(np.maximum(spectra @ bank.T, 1e-10))
    return (np.maximum(log, log.max() - 8) + 4) / 4


def test_log_mel_matches_an_independent_numpy_computation():
    rng = np.random.default_rng(0)
    t = np.arange(4000) / 16_000
    x_BL = np.stack([0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(4000),
                     0.1 * rng.standard_normal(4000)]).astype(np.float32)
    got = np.asarray(audio.log_mel(x_BL, n_mels=40))
    assert got.shape == (2, 4000 // audio.HOP, 40)
    for b in range(2):
        np.testing.assert_allclose(got[b], numpy_log_mel(x_BL[b].astype(np.float64), 40), atol=2e-3)


def test_window_and_filter_bank_closed_forms():
    w = audio.hann_window(400)
    assert w[0] == 0 and w[200] == pytest.approx(1) and w.sum() == pytest.approx(200)  # Σ periodic Hann = N / 2
    np.testing.assert_allclose(audio.mel_to_hz(audio.hz_to_mel([0, 700, 8000])), [0, 700, 8000], rtol=1e-9)
    assert audio.hz_to_mel(700) == pytest.approx(2595 * np.log10(2))
    bank = audio.mel_filterbank(80)
    assert bank.shape == (80, 201) and bank.min() >= 0 and bank.max() <= 1
    assert np.all(np.diff(np.argmax(bank, axis=1)) >= 0)  # peaks rise with the band
    assert np.all(bank.sum(axis=1) > 0)  # no empty band at 400-point FFTs and 80 mels


@pytest.mark.parametrize("freq", [320.0, 1000.0, 3000.0, 6000.0])  # whole FFT bins (40 Hz apart)
def test_a_pure_tone_lands_in_the_nearest_mel_band(freq):
    t = np.arange(16_000) / 16_000
    mel_FM = np.asarray(audio.log_mel(np.sin(2 * np.pi * freq * t)[None].astype(np.float32)))[0]
    loudest = int(np.argmax(mel_FM[5:-5].mean(axis=0)))
    centres = audio.mel_centres()
    assert loudest == int(np.argmin(np.abs(centres - freq)))


def test_silence_gives_the_floor_and_the_range_is_80_db():
    assert np.all(np.asarray(audio.log_mel(np.zeros((1, 3200), np.float32))) == pytest.approx(audio.SILENCE_LEVEL))
    x = np.zeros((1, 3200), np.float32)
    x[0, 1600:] = np.sin(np.arange(1600) * 0.3)
    mel = np.asarray(audio.log_mel(x))
    assert mel.max() - mel.min() <= audio.DYNAMIC_RANGE / 4 + 1e-6  # 8 log10 units, scaled by 1/4


def test_resampling_keeps_the_frequency_and_the_duration():
    rate = 22_050
    x = np.sin(2 * np.pi * 1000 * np.arange(rate) / rate)
    y = audio.resample(x, rate, 16_000)
    assert y.dtype == np.float32 and len(y) == 16_000
    assert np.argmax(np.abs(np.fft.rfft(y))) == 1000  # 1 Hz per bin over one second


def test_wav_round_trip_stereo_and_8_bit(tmp_path):
    x = (0.5 * np.sin(np.arange(8000) / 5)).astype(np.float32)
    path = audio.write_wav(tmp_path / "a.wav", x)
    np.testing.assert_allclose(audio.read_wav(path), x, atol=1 / 32768)
    from scipy.io import wavfile

    wavfile.write(tmp_path / "stereo8k.wav", 8000, np.stack([x[:4000], -x[:4000]], 1))  # float, 8 kHz, 2 channels
    assert np.abs(audio.read_wav(tmp_path / "stereo8k.wav")).max() < 1e-6  # the channels cancel
    wavfile.write(tmp_path / "u8.wav", 16_000, np.full(100, 192, np.uint8))
    np.testing.assert_allclose(audio.read_wav(tmp_path / "u8.wav"), 0.5)


def test_unreadable_and_too_long_audio_are_named(tmp_path):
    (tmp_path / "bad.wav").write_bytes(b"RIFF not really")
    with pytest.raises(audio.AudioFileError, match="bad.wav: not a readable WAV"):
        audio.read_wav(tmp_path / "bad.wav")
    with pytest.raises(audio.AudioFileError, match="no such audio file"):
        audio.read_wav(tmp_path / "missing.wav")
    with wave.open(str(tmp_path / "empty.wav"), "wb") as f:
        f.setnchannels(1), f.setsampwidth(2), f.setframerate(16_000)
    with pytest.raises(audio.AudioFileError, match="no samples"):
        audio.read_wav(tmp_path / "empty.wav")
    with pytest.raises(ValueError, match="clip.wav is 2.00 s long"):
        audio.fit_length([np.zeros(32_000)], 16_000, ["clip.wav"])
    np.testing.assert_array_equal(audio.fit_length([np.ones(3)], 5), [[1, 1, 1, 0, 0]])
