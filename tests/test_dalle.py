"""DALL-E's transformer: positions, the joint causal stream, loss weighting, filters, cached sampling, reranking."""

from __future__ import annotations

import dataclasses
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from minimodal import dalle
from minimodal.config import override
from minimodal.tokenizer import BOS_ID, EOS_ID, PAD_ID

TINY = dalle.PRESETS["tiny"]
TEXT_VOCAB = 300


class _Tok:
    vocab_size = TEXT_VOCAB


@pytest.fixture(scope="module")
def model():
    return dalle.build(TINY, _Tok(), nnx.Rngs(0))


def _text(B=3, seed=1):
    text = jax.random.randint(jax.random.key(seed), (B, TINY.context_length), 3, TEXT_VOCAB)
    return text.at[:, 0].set(BOS_ID).at[:, 8].set(EOS_ID).at[:, 9:].set(PAD_ID)


def _image(B=3, seed=2):
    return jax.random.randint(jax.random.key(seed), (B, 64), 0, TINY.image_vocab_size)


def test_image_positions_are_row_plus_column(model):
    pos_ND = np.asarray(model.image_positions())
    row, col = np.asarray(model.row_pos[...]), np.asarray(model.col_pos[...])
    assert pos_ND.shape == (64, TINY.dim)
    for n in (0, 7, 8, 29, 63):
        np.testing.assert_allclose(pos_ND[n], row[n // 8] + col[n % 8], rtol=1e-6)
    # embed_image at an offset uses the positions of those grid cells
    tok = jnp.array([[5, 6]])
    np.testing.assert_allclose(model.embed_image(tok, 10)[0],
                               np.asarray(model.image_embed(tok))[0] + pos_ND[10:12], rtol=1e-6)


def test_logit_shapes(model):
    text_logits, image_logits = model(_text(), _image())
    assert text_logits.shape == (3, TINY.context_length - 1, TEXT_VOCAB)
    assert image_logits.shape == (3, 64, TINY.image_vocab_size)


def test_joint_stream_is_causal(model):
    text, image = _text(), _image()
    _, base = model(text, image)
    k = 20
    _, changed = model(text, image.at[:, k].set((image[:, k] + 1) % TINY.image_vocab_size))
    # image logits n predict token n: they may depend on image tokens < n only
    np.testing.assert_allclose(changed[:, : k + 1], base[:, : k + 1], atol=1e-5)
    assert np.abs(np.asarray(changed[:, k + 1:] - base[:, k + 1:])).max() > 1e-4
    # every image position sees the caption
    _, other_caption = model(text.at[:, 3].set(text[:, 3] + 1), image)
    assert np.abs(np.asarray(other_caption[:, 0] - base[:, 0])).max() > 1e-4
    mask = dalle.stream_mask(TINY.context_length, 64)
    np.testing.assert_array_equal(mask, np.tril(np.ones((TINY.context_length + 63,) * 2, bool)))


def test_loss_weighting_and_pad_targets_ignored():
    V = 5
    # text: position 0 puts all mass on the target, position 1 is uniform, position 2 targets PAD
    text_logits = jnp.array([[[0.0, 0, 0, 50.0, 0], [0.0] * 5, [0.0, 0, 0, 0, 50.0]]])
    text_targets = jnp.array([[3, 4, PAD_ID]])
    image_logits = jnp.zeros((1, 4, 7))  # uniform over 7 codes: CE = log 7
    loss, (ce_text, ce_image) = dalle.weighted_loss(text_logits, text_targets, image_logits,
                                                    jnp.zeros((1, 4), jnp.int32), 1 / 8)
    np.testing.assert_allclose(ce_text, np.log(V) / 2, rtol=1e-5)  # mean of 0 and log 5 (PAD skipped)
    np.testing.assert_allclose(ce_image, np.log(7), rtol=1e-6)
    np.testing.assert_allclose(loss, np.log(V) / 2 / 8 + 7 / 8 * np.log(7), rtol=1e-5)


def test_loss_fn_and_caption_dropout(model):
    batch = {"tokens": _text(), "image_tokens": _image().reshape(3, 8, 8)}
    loss, m = dalle.loss_fn(model, batch, jax.random.key(0))
    np.testing.assert_allclose(loss, m["ce_text"] / 8 + 7 / 8 * m["ce_image"], rtol=1e-5)
    empty = jnp.broadcast_to(dalle.empty_caption(TINY.context_length), batch["tokens"].shape)
    dropped, _ = dalle.loss_fn(model, batch, jax.random.key(0), caption_dropout=0.999999)
    reference, _ = dalle.loss_fn(model, {**batch, "tokens": empty}, jax.random.key(0))
    np.testing.assert_allclose(dropped, reference, rtol=1e-6)
    assert list(np.asarray(dalle.empty_caption(5))) == [BOS_ID, EOS_ID, PAD_ID, PAD_ID, PAD_ID]


def test_top_k_filter_hand_example():
    logits = jnp.array([[1.0, 3.0, 2.0, 0.0], [0.5, 0.5, 0.1, 0.2]])
    out = np.asarray(dalle.top_k_filter(logits, 2))
    np.testing.assert_array_equal(np.isfinite(out), [[False, True, True, False], [True, True, False, False]])
    np.testing.assert_array_equal(dalle.top_k_filter(logits, 0), logits)  # k = 0: no filter
    np.testing.assert_array_equal(np.isfinite(dalle.top_k_filter(logits, 1))[0], [False, True, False, False])


def test_top_p_filter_hand_example():
    probs = jnp.array([[0.05, 0.5, 0.15, 0.3]])
    logits = jnp.log(probs)
    keep = lambda p: np.isfinite(np.asarray(dalle.top_p_filter(logits, p)))[0].tolist()  # noqa: E731
    assert keep(0.7) == [False, True, False, True]  # 0.5 + 0.3 reaches 0.7
    assert keep(0.5) == [False, True, False, False]  # the top token alone holds 0.5
    assert keep(0.1) == [False, True, False, False]  # the most likely token always stays
    assert keep(0.9) == [False, True, True, True]
    assert keep(1.0) == [True, True, True, True]


def test_sample_logits_follows_tempered_softmax():
    logits = jnp.log(jnp.array([[0.6, 0.3, 0.1]]))
    keys = jax.random.split(jax.random.key(0), 20_000)
    draws = jax.vmap(lambda k: dalle.sample_logits(k, logits, 2.0, 0, 1.0)[0])(keys)
    expected = jax.nn.softmax(logits[0] / 2.0)
    np.testing.assert_allclose(np.bincount(draws, minlength=3) / len(keys), expected, atol=0.015)


def test_guidance_scale_one_is_conditional():
    cond, uncond = jax.random.normal(jax.random.key(0), (2, 4, 9))
    np.testing.assert_array_equal(dalle.guide(jnp.concatenate([cond, uncond]), 1.0), cond)
    np.testing.assert_allclose(dalle.guide(jnp.concatenate([cond, uncond]), 0.0), uncond, atol=1e-6)
    np.testing.assert_allclose(dalle.guide(jnp.concatenate([cond, uncond]), 3.0), uncond + 3 * (cond - uncond),
                               rtol=1e-5, atol=1e-6)


def test_cached_sampling_equals_uncached(model):
    text = _text()
    for options in ({}, {"top_k": 5, "temperature": 0.7}, {"guidance": 2.5, "top_p": 0.9}):
        cached = dalle.sample(model, text, jax.random.key(3), **options)
        uncached = dalle.sample(model, text, jax.random.key(3), cached=False, **options)
        assert cached.shape == (3, 8, 8) and cached.dtype == jnp.int32
        np.testing.assert_array_equal(cached, uncached)


@pytest.fixture(scope="module")
def biased_model():
    """The tiny model with a relative position bias set to random values (it starts at zero)."""
    m = dalle.build(override(TINY, {"relative_bias": True}), _Tok(), nnx.Rngs(0))
    m.relative_bias[...] = jax.random.normal(jax.random.key(7), m.relative_bias.shape)
    return m


def test_relative_bias_depends_only_on_the_offset_between_two_image_tokens(biased_model):
    m, T, g = biased_model, TINY.context_length, 8
    table = np.asarray(m.relative_bias[...]).reshape(TINY.num_heads, 2 * g - 1, 2 * g - 1)
    S = T + g * g - 1
    bias_HSS = np.asarray(m.attention_bias(S))
    assert bias_HSS.shape == (TINY.num_heads, S, S)
    for n, n2 in ((9, 0), (9, 1), (63, 62), (40, 47), (12, 12)):  # (query, key) image tokens
        (r, c), (r2, c2) = divmod(n, g), divmod(n2, g)
        if T + n < S:
            np.testing.assert_array_equal(bias_HSS[:, T + n, T + n2], table[:, r - r2 + g - 1, c - c2 + g - 1])
    # the same offset (one row up) anywhere on the grid: the same bias
    np.testing.assert_array_equal(bias_HSS[:, T + 9, T + 1], bias_HSS[:, T + 50, T + 42])
    # anything involving a text position: no bias
    assert not bias_HSS[:, :T].any() and not bias_HSS[:, :, :T].any()
    assert dalle.build(TINY, _Tok(), nnx.Rngs(0)).attention_bias(S) is None


def test_zero_relative_bias_is_the_model_without_it(model):
    zero = dalle.build(override(TINY, {"relative_bias": True}), _Tok(), nnx.Rngs(0))
    text, image = _text(), _image()
    for got, want in zip(zero(text, image), model(text, image)):
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_cached_sampling_with_relative_bias_equals_uncached(biased_model):
    text = _text()
    draws = {}
    for name, options in (("plain", {}), ("guided", {"guidance": 2.5, "top_k": 5})):
        draws[name] = dalle.sample(biased_model, text, jax.random.key(3), **options)
        np.testing.assert_array_equal(draws[name], dalle.sample(biased_model, text, jax.random.key(3),
                                                                cached=False, **options))
    # and the bias matters: the same weights without it draw other tokens
    unbiased = dalle.sample(dalle.build(TINY, _Tok(), nnx.Rngs(0)), text, jax.random.key(3))
    assert (np.asarray(unbiased) != np.asarray(draws["plain"])).any()


def test_guided_sampler_with_scale_one_matches_plain_sampler(model):
    text = _text()
    graphdef, state = nnx.split(model)
    run = lambda guided: dalle._sample_jit(graphdef, state, text, jax.random.key(4), 1.0, 0, 1.0, 1.0,  # noqa: E731
                                           guided=guided, cached=True)
    plain, guided = run(False), run(True)
    np.testing.assert_array_equal(plain, guided)


def test_greedy_sampling_is_argmax_of_the_model(model):
    text = _text(B=2)
    tokens = dalle.sample(model, text, jax.random.key(0), top_k=1).reshape(2, 64)
    _, logits = model(text, tokens)  # teacher-forced on its own samples
    np.testing.assert_array_equal(tokens, jnp.argmax(logits, -1))


def test_bad_sampling_options_are_refused(model):
    with pytest.raises(ValueError, match="temperature"):
        dalle.sample(model, _text(), jax.random.key(0), temperature=0.0)
    with pytest.raises(ValueError, match="top_p"):
        dalle.sample(model, _text(), jax.random.key(0), top_p=0.0)
    with pytest.raises(ValueError, match="caption_dropout"):
        override(TINY, {"caption_dropout": 1.0})


def test_downsample_sets_the_grid_and_must_match_the_image_tokenizer(tmp_path):
    from minimodal import vqvae
    from minimodal.train import fit

    c = override(TINY, {"downsample": 2})
    assert c.grid == 16 and dalle.build(c, _Tok(), nnx.Rngs(0)).num_image_tokens == 256  # 32 px / 2 px per token
    assert dalle._tokenizer_config(c).downsample == 2  # the tokenizer `train dalle` trains folds once
    fine = dalle.PRESETS["fine"]  # its own tokenizer preset agrees with it on size, codes and grid
    assert dalle._tokenizer_config(fine) == override(vqvae.PRESETS["fine"], {"n_train": fine.n_train})
    assert (fine.grid, fine.image_vocab_size) == (8, 128)
    fit(vqvae.FAMILY, override(vqvae.PRESETS["tiny"], {"steps": 2}), tmp_path / "tok", progress=False)  # 4 px
    with pytest.raises(ValueError, match="4 px per token.*downsample=2"):
        dalle.load_image_tokenizer(override(c, {"image_tokenizer": str(tmp_path / "tok")}), tmp_path)


def test_clip_workdir_auto_trains_a_clip_that_reranks_by_default(tmp_path, capsys):
    """clip_workdir=auto: `train dalle` trains CLIP's `clip_preset` in WORKDIR/clip first; the loaded pipeline
    keeps, of `candidates` samples per prompt, the one that CLIP scores highest (checked by hand), and samples
    plainly with candidates=1."""
    from minimodal import load
    from minimodal.train import fit

    config = override(TINY, {"steps": 2, "checkpoint_every": 2, "clip_workdir": "auto", "clip_preset": "tiny"})
    fit(dalle.FAMILY, config, tmp_path, progress=False)
    assert "training CLIP's 'tiny' preset in" in capsys.readouterr().err
    pipe = load(tmp_path)
    assert pipe.reranker is not None and pipe.reranker.config.image_size == TINY.image_size
    prompts, n = ["a red circle", "a blue cross"], 3
    kept = pipe.generate(prompts, seed=3, candidates=n)
    drawn = pipe.generate([p for p in prompts for _ in range(n)], seed=3, candidates=1)  # the same draws, plainly
    cos_PN = np.einsum("pne,pe->pn", pipe.reranker.embed_images(drawn).reshape(len(prompts), n, -1),
                       pipe.reranker.embed_texts(prompts))
    np.testing.assert_array_equal(kept, drawn.reshape(len(prompts), n, *drawn.shape[1:])[[0, 1], cos_PN.argmax(1)])
    np.testing.assert_array_equal(pipe.generate(prompts, seed=3, candidates=1),
                                  dataclasses.replace(pipe, reranker=None).generate(prompts, seed=3))
    shutil.rmtree(tmp_path / "clip")
    with pytest.raises(FileNotFoundError, match="no CLIP at .* to rerank"):
        load(tmp_path)
    with pytest.raises(ValueError, match="clip_preset='huge'"):
        override(config, {"clip_preset": "huge"})
