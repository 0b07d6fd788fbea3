"""spoken_shapes: eSpeak NG through ctypes, deterministic examples, disjoint voices per split, noise, the
parallel synthesis and its cache, speech through the one pipeline, and a folder of recordings."""

from __future__ import annotations

import json

import numpy as np
import pytest

from minimodal import audio
from minimodal.data import Batches, espeak, load_examples, shapes, spoken_shapes
from minimodal.data.folder import FolderDataError
from minimodal.tokenizer import Tokenizer


def test_espeak_is_deterministic_whatever_came_before():
    first = espeak.synthesize("a red circle", "en-us+f2", rate=180)
    espeak.synthesize("a blue square on the left", "en-gb-x-rp+klatt", rate=240, pitch=20)
    again = espeak.synthesize("a red circle", "en-us+f2", rate=180)
    assert first.dtype == np.int16 and 0.5 < len(first) / espeak.SAMPLE_RATE < 2
    np.testing.assert_array_equal(first, again)
    faster = espeak.synthesize("a red circle", "en-us+f2", rate=360)
    assert len(faster) < 0.75 * len(first)


def test_espeak_errors_say_what_to_do(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="no voice 'xx-nowhere'"):
        espeak.synthesize("a red circle", "xx-nowhere")
    with pytest.raises(ValueError, match="rate must be in"):
        espeak.synthesize("a red circle", rate=10)
    monkeypatch.setenv("ESPEAK_NG_LIBRARY", str(tmp_path / "libespeak-ng.so"))
    monkeypatch.setenv("ESPEAK_NG_DATA", str(tmp_path))
    with pytest.raises(espeak.ESpeakUnavailable, match="pip install espeakng-loader"):
        espeak.synthesize("a red circle")
    (tmp_path / "libespeak-ng.so").write_bytes(b"not a library")
    with pytest.raises(espeak.ESpeakUnavailable, match="cannot load"):
        espeak.synthesize("a red circle")


def test_examples_are_a_pure_function_of_seed_split_and_index():
    whole = spoken_shapes.generate(4, seed=3, split="test", seconds=3.0)
    part = spoken_shapes.generate(2, seed=3, split="test", start=2, seconds=3.0)
    np.testing.assert_array_equal(whole["waveforms"][2:], part["waveforms"])
    assert whole["captions"][2:] == part["captions"] and whole["waveforms"].shape == (4, 48_000)
    assert whole["captions"] == shapes.generate(4, seed=3 + spoken_shapes.SPLIT_SEED["test"])["captions"]
    other = spoken_shapes.generate(2, seed=4, split="test", seconds=3.0)
    assert not np.array_equal(other["waveforms"], whole["waveforms"][:2])
    peaks = np.abs(whole["waveforms"]).max(axis=1) / 32768
    assert np.all((peaks > 0.09) & (peaks < 0.91))


def test_splits_hear_disjoint_voices_and_holdout_rates_are_never_trained():
    train = {spoken_shapes.speaker(0, "train", i)["voice"] for i in range(400)}
    for split in ("holdout", "unseen"):
        heard = [spoken_shapes.speaker(0, split, i) for i in range(200)]
        assert not train & {p["voice"] for p in heard}
    assert all(not 140 <= spoken_shapes.speaker(0, "holdout", i)["rate"] <= 220 for i in range(200))
    assert {spoken_shapes.speaker(0, "test", i)["voice"] for i in range(400)} <= set(
        spoken_shapes.voice_name(a, v) for a in spoken_shapes.TRAIN_ACCENTS for v in spoken_shapes.TRAIN_VARIANTS)


def test_noise_has_the_asked_snr_and_images_match_their_captions():
    clean = spoken_shapes.generate(1, seed=0, split="unseen", images=True)
    noisy = spoken_shapes.generate(1, seed=0, split="unseen", snr_db=10.0)
    speech = clean["waveforms"][0].astype(np.float64)
    noise = noisy["waveforms"][0] - speech
    heard = np.nonzero(speech)[0]
    speech = speech[heard[0]:heard[-1] + 1]  # the utterance, without the silence around it
    snr = 10 * np.log10(np.mean(speech ** 2) / np.mean(noise ** 2))
    assert snr == pytest.approx(10.0, abs=0.3)
    read = shapes.read_attributes(clean["images"][0])
    assert read["color"] in clean["captions"][0] and read["shape"] in clean["captions"][0]


def test_large_requests_are_cached_and_speech_batches_need_no_images(monkeypatch, tmp_path):
    monkeypatch.setenv("MINIMODAL_DATA", str(tmp_path))
    monkeypatch.setattr(spoken_shapes, "CACHE_MIN", 3)
    first = load_examples("spoken_shapes", "train", n=3, seed=1, seconds=3.0)  # one process per core
    assert len(list((tmp_path / "spoken_shapes").glob("*.npz"))) == 1
    serial = spoken_shapes.generate(3, seed=1, split="train", seconds=3.0)
    np.testing.assert_array_equal(first["waveforms"], serial["waveforms"])
    assert first["captions"] == serial["captions"] and first["voices"] == serial["voices"]
    again = load_examples("spoken_shapes", "train", n=3, seed=1, seconds=3.0)
    np.testing.assert_array_equal(first["waveforms"], again["waveforms"])
    assert again["captions"] == first["captions"] and again["voices"] == first["voices"]
    tokenizer = Tokenizer.train(first["captions"], 300)
    batch = Batches(first, tokenizer, batch_size=2, context_length=16).batch(0)
    assert batch["waveforms"].dtype == np.float32 and batch["waveforms"].shape == (2, 48_000)
    assert "images" not in batch and np.abs(batch["waveforms"]).max() <= 1
    with pytest.raises(ValueError, match="waveforms'] must be an int16 or float32"):
        Batches({"captions": ["a"], "waveforms": np.zeros((1, 4), np.int32)}, tokenizer, 1, 16)
    with pytest.raises(ValueError, match="unknown spoken_shapes option"):
        load_examples("spoken_shapes", "train", n=1, voice="en-us")


def test_a_folder_of_recordings_is_speech_with_named_problems(tmp_path):
    x = (0.3 * np.sin(np.arange(8000) / 3)).astype(np.float32)
    audio.write_wav(tmp_path / "one.wav", x)
    audio.write_wav(tmp_path / "two.wav", x[:4000], sample_rate=8000)  # 0.5 s at 8 kHz -> 8000 samples at 16 kHz
    lines = [{"file": "one.wav", "caption": "a red circle"}, {"file": "two.wav", "caption": "a blue square"}]
    (tmp_path / "captions.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    data = load_examples(f"folder:{tmp_path}", "all")
    assert data["waveforms"].dtype == np.int16 and data["waveforms"].shape == (2, 8000)
    assert data["captions"] == ["a red circle", "a blue square"] and "images" not in data
    (tmp_path / "three.wav").write_bytes(b"garbage")
    (tmp_path / "four.wav").write_bytes(b"garbage")
    (tmp_path / "captions.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines) +
                                            json.dumps({"file": "three.wav", "caption": "a cross"}) + "\n")
    with pytest.raises(FolderDataError, match="(?s)four.wav: no caption.*three.wav: unreadable recording"):
        load_examples(f"folder:{tmp_path}", "all")
