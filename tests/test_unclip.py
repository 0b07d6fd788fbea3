"""unCLIP: the prior, the embedding-conditioned decoder, the pipeline (generate / vary / interpolate) and its
grading, on tiny models trained for a few steps (the CLIP too: `clip_preset=tiny` trains it in WORKDIR/clip)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import minimodal
from minimodal import cli, ddpm, prior, unclip
from minimodal.data import shapes
from minimodal.metrics import typed_prompt_fidelity
from minimodal.tokenizer import Tokenizer
from minimodal.train import fit


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny unCLIP trained end to end with no clip= given: its CLIP (tiny preset) and prior are trained too."""
    workdir = tmp_path_factory.mktemp("unclip") / "run"
    fit(unclip.FAMILY, unclip.PRESETS["tiny"], workdir, progress=False)
    return workdir


@pytest.fixture(scope="module")
def pipe(run):
    return minimodal.load(run)


def test_training_trains_what_it_needs(run):
    assert (run / "clip" / "checkpoints" / "30").exists()  # CLIP's tiny preset, in WORKDIR/clip
    assert (run / "prior" / "checkpoints" / str(prior.PRESETS["tiny"].steps)).exists()
    clip_tokenizer = Tokenizer.load(run / "clip" / "tokenizer.json")
    assert Tokenizer.load(run / "tokenizer.json").merges == clip_tokenizer.merges  # CLIP's tokenizer, not a new one


def test_slerp_follows_the_great_circle():
    a, b = np.array([1.0, 0.0, 0.0]), np.array([0.0, 0.6, 0.8])
    path = unclip.slerp(a, b, np.linspace(0, 1, 5))
    np.testing.assert_allclose(path[0], a, atol=1e-6)
    np.testing.assert_allclose(path[-1], b, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(path, axis=1), 1.0, atol=1e-6)  # stays on the sphere
    angles = np.arccos(np.clip(path @ a, -1, 1))
    np.testing.assert_allclose(np.diff(angles), np.pi / 8, atol=1e-6)  # equal angular steps: θ = π/2 in 4
    np.testing.assert_allclose(unclip.slerp(a, a, np.array([0.3])), a[None], atol=1e-6)


def test_decoder_with_embed_dropped_is_the_decoder_given_zeros(tokenizer_for_tiny):
    config = dataclasses.replace(unclip.PRESETS["tiny"], embed_drop=1.0)
    model = unclip.build(config, tokenizer_for_tiny, nnx.Rngs(0))
    images = jnp.asarray(shapes.generate(4, 16, seed=1)["images"], jnp.float32) / 127.5 - 1
    batch = {"images": images, "tokens": jnp.zeros((4, 16), jnp.int32),
             "image_emb": jax.random.normal(jax.random.key(0), (4, config.embed_dim))}
    dropped, _ = unclip.loss_fn(model, batch, jax.random.key(3))
    zeros, _ = unclip.loss_fn(model, {**batch, "image_emb": jnp.zeros_like(batch["image_emb"])}, jax.random.key(3))
    np.testing.assert_allclose(dropped, zeros, rtol=1e-6)
    with pytest.raises(ValueError, match="image embedding"):
        model(images, jnp.zeros((4,), jnp.int32))


@pytest.fixture(scope="module")
def tokenizer_for_tiny():
    return Tokenizer.train(shapes.generate(200, 16)["captions"], 300)


def test_prior_draws_unit_embeddings_keeping_the_candidate_nearest_the_text(pipe):
    y = pipe.clip.embed_texts(["a red circle", "a blue square"])
    tokens = pipe.tokenizer.encode_batch(["a red circle", "a blue square"], pipe.config.context_length)
    z = prior.sample(pipe.prior, y, tokens, jax.random.key(0), candidates=3)
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(z, prior.sample(pipe.prior, y, tokens, jax.random.key(0), candidates=3))
    every = prior.draws(pipe.prior, y, tokens, jax.random.key(0), candidates=3)  # (2, 3, E)
    assert every.shape == (2, 3, y.shape[1]) and not np.allclose(every[:, 0], every[:, 1])
    nearest = np.argmax(np.einsum("bce,be->bc", every, y), axis=1)
    np.testing.assert_allclose(z, every[np.arange(2), nearest], atol=1e-6)
    with pytest.raises(ValueError, match="candidates"):
        prior.sample(pipe.prior, y, tokens, jax.random.key(0), candidates=0)


def test_generate_vary_reconstruct_and_interpolate(pipe):
    size = pipe.config.image_size
    images = pipe.generate(["a red circle", "a large blue cross"], seed=1)
    assert images.shape == (2, size, size, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(images, pipe.generate(["a red circle", "a large blue cross"], seed=1))
    baseline = pipe.generate(["a red circle"], seed=1, prior="text")
    assert baseline.shape == (1, size, size, 3)
    sources = shapes.generate(2, 32, seed=4)["images"]
    variations = pipe.vary(sources, n=3, seed=2)
    assert variations.shape == (2, 3, size, size, 3) and variations.dtype == np.uint8
    assert len({row.tobytes() for row in variations[0]}) == 3  # fresh noise per variation
    assert pipe.reconstruct(sources, seed=2).shape == (2, size, size, 3)
    strip = pipe.interpolate(sources[0], sources[1], steps=4, seed=3)
    assert strip.shape == (4, size, size, 3)
    same = pipe.interpolate(sources[0], sources[0], steps=3, seed=3)  # one embedding, one x_T: one image
    assert all(np.array_equal(same[0], frame) for frame in same)


def test_bad_input_is_named(pipe):
    sources = shapes.generate(1, 32, seed=4)["images"]
    for call, match in ((lambda: pipe.generate("a red circle"), "list"),
                        (lambda: pipe.generate(["a red circle"], prior="clip"), "prior"),
                        (lambda: pipe.generate(["a red circle"], temprature=1.0), "temprature"),
                        (lambda: pipe.vary(sources.astype(np.float32)), "uint8"),
                        (lambda: pipe.vary(sources, n=0), "at least 1"),
                        (lambda: pipe.interpolate(sources[0], sources[0], steps=1), "at least 2")):
        with pytest.raises((ValueError, TypeError), match=match):
            call()
    with pytest.raises(ValueError, match="prior"):
        dataclasses.replace(unclip.PRESETS["tiny"], prior="linear")
    for key, value in (("text_from_clip", "runs/clip"), ("freeze_text", True)):  # the text-to-image DDPM's options
        with pytest.raises(ValueError, match="text-to-image DDPM"):
            unclip.build(dataclasses.replace(unclip.PRESETS["tiny"], **{key: value}), pipe.tokenizer, nnx.Rngs(0))


def test_evaluation_reports_every_figure_in_range(pipe):
    from minimodal import unclip_eval

    out = unclip_eval.prior_embeddings(pipe, 6, seed=5) | unclip_eval.variations(pipe, 3, seed=6)
    assert set(out) == {"text_cosine", "prior_cosine", "zero_shot_text", "zero_shot_image", "zero_shot_prior",
                        "variations_keep", "variations_moved", "reconstruction_exact"}
    assert all(-1 <= out[k] <= 1 for k in ("text_cosine", "prior_cosine"))
    assert all(0 <= v <= 1 for k, v in out.items() if "cosine" not in k)
    assert out["reconstruction_exact"] <= out["variations_keep"]


def _paint(obj: dict, size: int = 16) -> np.ndarray:
    """A clean render of one typed-prompt object, centred (what a perfect generator would draw)."""
    w = shapes.box_width(obj.get("size", "large"), size)
    i, j = np.mgrid[:w, :w]
    image = np.zeros((size, size, 3), np.uint8)
    top = (size - w) // 2
    image[top:top + w, top:top + w][shapes.shape_mask(obj["shape"], i, j, w, w)] = shapes.COLORS[obj["color"]]
    return image


def test_typed_prompt_fidelity_grades_a_perfect_and_a_blank_generator():
    prompts = shapes.typed_prompts(24, seed=0)
    lookup = dict(zip(prompts["captions"], (objs[0] for objs in prompts["objects"])))
    perfect = typed_prompt_fidelity(lambda p: np.stack([_paint(lookup[c]) for c in p]), 24, seed=0)
    assert perfect["fidelity"] == 1.0 and perfect["size"] == 1.0
    assert {f"fidelity_{s}" for s in shapes.SHAPES} <= set(perfect)
    blank = typed_prompt_fidelity(lambda p: np.zeros((len(p), 16, 16, 3), np.uint8), 24, seed=0)
    assert blank["fidelity"] == 0.0


def test_cli_vary_writes_variations_and_an_interpolation(run, tmp_path):
    from PIL import Image

    paths = []
    for k, image in enumerate(shapes.generate(2, 32, seed=7)["images"]):
        paths.append(tmp_path / f"{k}.png")
        Image.fromarray(image).save(paths[-1])
    assert cli.main(["vary", "--workdir", str(run), "--image", str(paths[0]), "-n", "2",
                     "--out", str(tmp_path / "v.png"), "steps=2"]) == 0
    assert cli.main(["vary", "--workdir", str(run), "--image", str(paths[0]), "--to", str(paths[1]), "-n", "3",
                     "--out", str(tmp_path / "i.png")]) == 0
    assert Image.open(tmp_path / "v.png").size[0] > Image.open(tmp_path / "v.png").size[1]  # one row of 2
    assert (tmp_path / "i.png").exists()


def test_data_source_options_reach_the_source():
    from minimodal.data import load_examples, source_options

    assert source_options("objects=2,background=noise") == {"objects": 2, "background": "noise"}
    pairs = load_examples("shapes:objects=2", "train", 3, 16, 0)
    assert all(len(objs) == 2 for objs in pairs["objects"]) and len(pairs["relations"]) == 3
    with pytest.raises(ValueError, match="key=value"):
        source_options("objects")


def test_ddpm_reads_an_embedding_only_when_built_to(tokenizer_for_tiny):
    plain = ddpm.build(ddpm.PRESETS["tiny"], tokenizer_for_tiny, nnx.Rngs(0))
    with pytest.raises(ValueError, match="no image embedding"):
        ddpm.sample(plain, tokenizer_for_tiny, ["a red circle"], jax.random.key(0), embeds=np.zeros((1, 16)))
