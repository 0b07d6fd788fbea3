"""Whisper: the shared decoder's cross-attention cache, cached = uncached decoding, beam search, the loss and its
augmentations, parameter counts, and the whole path (train tiny -> load -> transcribe, CLI) in seconds."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import minimodal
from minimodal import audio, cli, whisper
from minimodal.data import spoken_shapes
from minimodal.nn.attention import causal_mask
from minimodal.nn.transformer import Transformer
from minimodal.tokenizer import BOS_ID, EOS_ID, PAD_ID
from minimodal.train import fit

TINY = whisper.PRESETS["tiny"]


def test_decoding_with_cross_attention_keys_computed_once_equals_the_full_forward_pass():
    model = Transformer(16, 2, 2, cross_dim=8, rngs=nnx.Rngs(0))
    x_BTD = jax.random.normal(jax.random.key(1), (2, 5, 16))
    context_BSD = jax.random.normal(jax.random.key(2), (2, 7, 8))
    full_BTD = model(x_BTD, mask=causal_mask(5), context_BSD=context_BSD)
    context_kv, cache = model.context_kv(context_BSD), model.init_cache(2, 5)
    steps = []
    for t in range(5):
        y_B1D, cache = model.decode(x_BTD[:, t:t + 1], cache, t, context_kv=context_kv)
        steps.append(y_B1D)
    np.testing.assert_allclose(jnp.concatenate(steps, 1), full_BTD, atol=1e-5)
    with pytest.raises(ValueError, match="needs a Transformer with cross-attention"):
        Transformer(16, 1, 2, rngs=nnx.Rngs(0)).context_kv(context_BSD)


@pytest.fixture(scope="module")
def random_model():
    config = dataclasses.replace(TINY, context_length=8)
    return whisper.Whisper(config, vocab_size=40, rngs=nnx.Rngs(3))


def test_cached_and_uncached_decoders_agree_and_one_beam_is_greedy(random_model):
    waveforms_BL = 0.1 * jax.random.normal(jax.random.key(0), (3, TINY.samples))
    greedy = whisper.decode_tokens(random_model, waveforms_BL)
    np.testing.assert_array_equal(greedy, whisper.decode_tokens(random_model, waveforms_BL, cached=False))
    np.testing.assert_array_equal(greedy, whisper.decode_tokens(random_model, waveforms_BL, beam_size=1))
    beam = whisper.decode_tokens(random_model, waveforms_BL, beam_size=3)
    np.testing.assert_array_equal(beam, whisper.decode_tokens(random_model, waveforms_BL, beam_size=3, cached=False))
    for tokens in (np.asarray(greedy), np.asarray(beam)):
        assert tokens.shape == (3, 8) and np.all(tokens[:, 0] == BOS_ID)
        for row in tokens:  # nothing but PAD after the first EOS
            after = row[list(row).index(EOS_ID) + 1:] if EOS_ID in row else []
            assert np.all(np.asarray(after) == PAD_ID)


def test_beam_search_finds_the_most_likely_transcript_when_the_beam_is_wide(random_model):
    """With α = 0 and a beam as wide as every prefix, beam search is exhaustive: its answer's log-probability,
    scored by the teacher-forced model, is at least the greedy answer's."""
    model = whisper.Whisper(dataclasses.replace(random_model.config, context_length=3), 5, rngs=nnx.Rngs(5))
    waveforms_BL = 0.1 * jax.random.normal(jax.random.key(1), (2, TINY.samples))

    def log_p(tokens_BT):
        logp_BTV = jax.nn.log_softmax(model(waveforms_BL, tokens_BT[:, :-1]))
        picked_BT = jnp.take_along_axis(logp_BTV, tokens_BT[:, 1:, None], -1)[..., 0]
        said_BT = jnp.cumsum(tokens_BT[:, :-1] == EOS_ID, axis=1) == 0  # up to and including the first EOS
        return np.asarray(jnp.sum(jnp.where(said_BT, picked_BT, 0.0), axis=1))

    best = whisper.decode_tokens(model, waveforms_BL, beam_size=25, length_penalty=0.0)  # = V² prefixes
    greedy = whisper.decode_tokens(model, waveforms_BL)
    assert np.all(log_p(best) >= log_p(greedy) - 1e-5)


def test_label_smoothing_closed_forms():
    logits_BTV = jax.random.normal(jax.random.key(0), (2, 3, 7))
    targets_BT = jnp.array([[1, 2, 3], [4, 5, 6]])
    logp = jax.nn.log_softmax(logits_BTV)
    plain = -jnp.take_along_axis(logp, targets_BT[..., None], -1)[..., 0]
    np.testing.assert_allclose(whisper.smoothed_cross_entropy(logits_BTV, targets_BT, 0.0), plain, rtol=1e-6)
    uniform = whisper.smoothed_cross_entropy(jnp.zeros((1, 1, 7)), jnp.array([[0]]), 0.3)
    np.testing.assert_allclose(uniform, np.log(7), rtol=1e-6)  # every token has -log p = log V


def test_noise_and_masks_do_what_they_say():
    x_BL = jnp.concatenate([jnp.sin(jnp.arange(4000.0))[None] * jnp.array([[0.5], [0.1]]),
                            jnp.zeros((2, 4000))], axis=1)  # speech, then padding
    noisy = whisper.add_noise(jax.random.key(0), x_BL, 1.0, 20.0, 20.0)
    noise = noisy - x_BL
    snr = 10 * jnp.log10(jnp.mean(x_BL[:, :4000] ** 2, 1) / jnp.mean(noise ** 2, 1))
    np.testing.assert_allclose(snr, 20.0, atol=0.3)
    np.testing.assert_array_equal(whisper.add_noise(jax.random.key(0), x_BL, 0.0, 5.0, 5.0), x_BL)
    mel_BFM = jnp.ones((4, 100, 40))
    masked = whisper.spec_augment(jax.random.key(1), mel_BFM, bands=2, max_band=5, spans=2, max_span=10)
    zero_bands = (masked == 0).all(axis=1).sum(axis=1)
    zero_frames = (masked == 0).all(axis=2).sum(axis=1)
    assert np.all(zero_bands <= 10) and np.all(zero_frames <= 20) and np.any(zero_bands + zero_frames > 0)


def test_parameter_counts_of_the_presets_are_pinned():
    count = lambda c: sum(x.size for x in jax.tree.leaves(nnx.state(whisper.Whisper(c, 64, rngs=nnx.Rngs(0)),  # noqa: E731
                                                                            nnx.Param)))
    assert count(TINY) == 39_360
    assert count(whisper.PRESETS["default"]) == 316_608


def test_config_and_data_errors_name_the_fix():
    with pytest.raises(ValueError, match="even number"):
        whisper.Config(audio_seconds=0.03)
    with pytest.raises(ValueError, match="whisper trains on speech"):
        whisper.prepare(TINY, {"images": np.zeros((1, 8, 8, 3), np.uint8), "captions": ["a"]}, None, ".")
    long = {"waveforms": np.ones((1, TINY.samples + 10), np.int16), "captions": ["a"]}
    with pytest.raises(ValueError, match="raise audio_seconds"):
        whisper.prepare(TINY, long, None, ".")


def test_train_tiny_then_transcribe_files_and_arrays(tmp_path, capsys):
    trained = fit(whisper.FAMILY, TINY, tmp_path / "run", progress=False)
    assert trained.step == TINY.steps
    pipe = minimodal.load(tmp_path / "run")
    clip = spoken_shapes.generate(1, seed=0, split="test")["waveforms"][0].astype(np.float32) / 32768
    path = audio.write_wav(tmp_path / "clip.wav", clip)
    texts = pipe.transcribe([path, clip], beam_size=1)
    assert len(texts) == 2 and texts[0] == texts[1] and all(isinstance(t, str) for t in texts)
    assert pipe.transcribe(clip[::2].copy(), sample_rate=8000, beam_size=1) == texts[:1]  # resampled to 16 kHz
    with pytest.raises(ValueError, match="unknown option 'beam'"):
        pipe.transcribe([clip], beam=3)
    with pytest.raises(ValueError, match="beam_size and batch_size must be at least 1"):
        pipe.transcribe([clip], beam_size=0)
    with pytest.raises(audio.AudioFileError, match="no such audio file"):
        pipe.transcribe([tmp_path / "missing.wav"])
    assert cli.main(["transcribe", "--workdir", str(tmp_path / "run"), str(path), "beam_size=1"]) == 0
    assert capsys.readouterr().out.strip() == f"{path}\t{texts[0]}"
    assert cli.main(["transcribe", "--workdir", str(tmp_path / "run"), str(tmp_path / "missing.wav")]) == 2


@pytest.mark.slow
def test_default_training_reaches_the_word_error_targets(tmp_path):
    """The README's `minimodal train whisper --data spoken_shapes`: WER <= 5% on test, <= 10% on holdout and unseen
    voices (greedy, clean)."""
    trained = fit(whisper.FAMILY, whisper.PRESETS["default"], tmp_path / "run", progress=False)
    metrics = whisper.evaluate(trained.model, trained.config, trained.tokenizer, tmp_path / "run")
    assert metrics["wer_test"] <= 0.05
    assert metrics["wer_holdout"] <= 0.10 and metrics["wer_unseen"] <= 0.10
