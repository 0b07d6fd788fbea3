"""CLIP: the contrastive losses against hand computations, their invariances, the global batch across
devices, the encoders, and the tasks (zero-shot, retrieval, search, linear probe)."""

from __future__ import annotations

import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from PIL import Image
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from minimodal import clip
from minimodal.clip_tasks import ClipPipeline, class_embeddings, linear_probe, retrieval_recall, search, zero_shot
from minimodal.data import shapes
from minimodal.tokenizer import Tokenizer

TOKENIZER = types.SimpleNamespace(vocab_size=300, eos_id=2, pad_id=0, bos_id=1)


def unit(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def log_softmax(z, axis):
    z = z - z.max(axis=axis, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


def tokens(*rows):
    return jnp.array([[1, *r, 2] for r in rows], jnp.int32)


# ----------------------------------------------------------------------------- losses


def test_positives_by_identity_captions_and_attributes():
    t = tokens([5, 6], [7, 8], [5, 6], [5, 9])
    np.testing.assert_array_equal(clip.positives({"tokens": t}, "identity"), np.eye(4))
    same = np.array([[1, 0, 1, 0], [0, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 1]])
    np.testing.assert_array_equal(clip.positives({"tokens": t}, "captions"), same)
    np.testing.assert_array_equal(clip.positives({"tokens": t}, "attributes"), same)  # no attributes: captions
    ex = clip.prepare(clip.Config(partial_captions=0.0), {"captions": [
                                                   "a red circle", "a large red circle at the top left",
                                                   "a small blue circle"],
                                      "objects": [[{"color": "red", "shape": "circle", "size": "small",
                                                    "position": "center"}],
                                                  [{"color": "red", "shape": "circle", "size": "large",
                                                    "position": "top left"}],
                                                  [{"color": "blue", "shape": "circle", "size": "small",
                                                    "position": "top"}]]}, None)
    np.testing.assert_array_equal(ex["caption_attributes"], [[0, 0, -1, -1], [0, 0, 1, 0], [2, 0, 0, -1]])
    M = clip.positives({"tokens": t[:3], **{k: jnp.asarray(ex[k]) for k in ("image_attributes",
                                                                              "caption_attributes")}})
    # "a red circle" is true of both red circles; the other captions only of their own image
    np.testing.assert_array_equal(M, [[1, 0, 0], [1, 1, 0], [0, 0, 1]])


def test_partial_captions_name_only_colour_or_only_shape():
    ex = shapes.generate(200, seed=5)
    out = clip.prepare(clip.Config(partial_captions=1.0), ex, None)
    assert out["captions"] == clip.prepare(clip.Config(partial_captions=1.0), ex, None)["captions"]  # seeded
    for caption, original, image_a, caption_a in zip(out["captions"], ex["captions"], out["image_attributes"],
                                                     out["caption_attributes"]):
        named = [w in caption.split() for w in (list(shapes.COLORS)[image_a[0]], shapes.SHAPES[image_a[1]])]
        assert sum(named) == 1 and (caption_a[:2] >= 0).tolist() == named
        np.testing.assert_array_equal(caption_a[caption_a >= 0], image_a[caption_a >= 0])
        assert len(caption.split()) == len(original.split()) - (not named[0])
    assert 0.3 < np.mean(out["caption_attributes"][:, 0] < 0) < 0.7
    kept = clip.prepare(clip.Config(partial_captions=0.0), ex, None)
    assert kept["captions"] == ex["captions"] and (kept["caption_attributes"][:, :2] >= 0).all()
    assert clip.prepare(clip.Config(targets="captions"), ex, None) is ex


def test_infonce_matches_hand_computation():
    img, txt = unit([[1.0, 0.0], [0.6, 0.8]]), unit([[0.8, 0.6], [0.0, 1.0]])
    s = 10.0
    logits = s * img @ txt.T
    np.testing.assert_allclose(logits, [[8.0, 0.0], [9.6, 8.0]], atol=1e-12)
    # rows: -log softmax of the diagonal over each row; columns likewise over each column
    rows = [-(8 - math.log(math.exp(8) + 1)), -(8 - math.log(math.exp(9.6) + math.exp(8)))]
    cols = [-(8 - math.log(math.exp(8) + math.exp(9.6))), -(8 - math.log(1 + math.exp(8)))]
    expected = 0.5 * (np.mean(rows) + np.mean(cols))
    loss, _ = clip.contrastive_loss(jnp.array(img, jnp.float32), jnp.array(txt, jnp.float32), jnp.eye(2), s)
    np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_siglip_matches_hand_computation():
    img, txt = unit([[1.0, 0.0], [0.6, 0.8]]), unit([[0.8, 0.6], [0.0, 1.0]])
    s, b = 10.0, -5.0
    z = s * img @ txt.T + b
    sign = 2 * np.eye(2) - 1
    expected = np.sum(np.log1p(np.exp(-sign * z))) / 2  # -log σ(x) = log(1 + e^-x)
    loss, _ = clip.contrastive_loss(jnp.array(img, jnp.float32), jnp.array(txt, jnp.float32), jnp.eye(2),
                                    s, jnp.float32(b), kind="siglip")
    np.testing.assert_allclose(loss, expected, rtol=1e-5)


@pytest.fixture
def pairs():
    k1, k2 = jax.random.split(jax.random.key(0))
    img = clip.l2_normalize(jax.random.normal(k1, (8, 6)))
    txt = clip.l2_normalize(img + 0.7 * jax.random.normal(k2, (8, 6)))
    M = np.eye(8)
    M[0, 2] = M[3, 0] = M[5, 1] = 1  # some captions are also true of other images
    return img, txt, jnp.asarray(M, jnp.float32)


@pytest.mark.parametrize("kind", ["infonce", "siglip"])
def test_loss_is_symmetric_and_invariant_to_permuting_pairs(pairs, kind):
    img, txt, M = pairs
    loss = lambda i, t, m: clip.contrastive_loss(i, t, m, 14.0, jnp.float32(-3.0), kind=kind)[0]  # noqa: E731
    reference = loss(img, txt, M)
    np.testing.assert_allclose(loss(txt, img, M.T), reference, rtol=1e-6)  # swap the modalities
    perm = np.array([3, 7, 0, 5, 1, 6, 2, 4])
    np.testing.assert_allclose(loss(img[perm], txt[perm], M[perm][:, perm]), reference, rtol=1e-6)
    # and it does depend on which text belongs to which image
    assert not np.allclose(loss(img, txt[perm], M), reference)


def test_identical_captions_change_nothing_but_true_captions_do(pairs):
    """Identical captions have identical embeddings, so sharing their target gives exactly the loss (and
    gradient) of plain CLIP; a caption true of another image (its text differs) changes the loss."""
    img, txt, _ = pairs
    same = jnp.eye(8).at[0, 2].set(1).at[2, 0].set(1)

    def f(i, t, m):  # texts 0 and 2 are the same caption, so they are one embedding
        return clip.contrastive_loss(i, t.at[2].set(t[0]), m, 14.0)[0]

    np.testing.assert_allclose(f(img, txt, same), f(img, txt, jnp.eye(8)), rtol=1e-6)
    for argnum in (0, 1):
        np.testing.assert_allclose(jax.grad(f, argnum)(img, txt, same), jax.grad(f, argnum)(img, txt, jnp.eye(8)),
                                   rtol=1e-5, atol=1e-6)
    # caption 1 is also true of image 0: plain CLIP pushes image 0 away from it, the shared target pulls
    e = jnp.eye(4)
    true_of_0 = jnp.eye(4).at[0, 1].set(1)
    g = lambda m: jax.grad(lambda i: clip.contrastive_loss(i, e, m, 10.0)[0])(e)  # noqa: E731
    assert float(g(jnp.eye(4))[0] @ e[1]) > 0 > float(g(true_of_0)[0] @ e[1])  # descent moves along -grad


def test_global_batch_loss_is_the_same_on_many_devices():
    if jax.device_count() < 2:
        pytest.skip("needs several devices: XLA_FLAGS=--xla_force_host_platform_device_count=8")
    config = clip.PRESETS["tiny"]
    model = clip.build(config, TOKENIZER, nnx.Rngs(0))
    rng = np.random.default_rng(0)
    batch = {"images": jnp.asarray(rng.uniform(-1, 1, (16, 32, 32, 3)), jnp.float32),
             "tokens": tokens(*[[int(v)] for v in rng.integers(3, 9, 16)])}
    graphdef, state = nnx.split(model)
    fn = jax.jit(lambda state, b: clip.loss_fn(nnx.merge(graphdef, state), b, jax.random.key(0))[0])
    single = fn(state, batch)
    mesh = Mesh(np.asarray(jax.devices()), ("data",))
    sharded = jax.device_put(batch, NamedSharding(mesh, P("data")))
    assert len(sharded["images"].sharding.device_set) == jax.device_count()
    np.testing.assert_allclose(fn(jax.device_put(state, NamedSharding(mesh, P())), sharded), single, rtol=1e-5)


# ----------------------------------------------------------------------------- the model


def test_temperature_starts_at_one_over_0_07_and_is_clamped_at_100():
    model = clip.build(clip.PRESETS["tiny"], TOKENIZER, nnx.Rngs(0))
    np.testing.assert_allclose(model.scale(), 1 / 0.07, rtol=1e-6)
    # no weakly typed parameters: the trainer's jitted step would compile twice (its output is strong)
    assert not any(p.weak_type for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
    model.log_scale[...] = jnp.asarray(10.0)
    np.testing.assert_allclose(model.scale(), 100.0, rtol=1e-6)
    siglip = clip.build(clip.Config(loss="siglip", **_tiny_kwargs()), TOKENIZER, nnx.Rngs(0))
    np.testing.assert_allclose(siglip.scale(), 10.0, rtol=1e-6)
    assert float(siglip.bias[...]) == -10.0


def _tiny_kwargs():
    tiny = clip.PRESETS["tiny"]
    return {k: getattr(tiny, k) for k in ("image_width", "image_depth", "image_heads", "text_width", "text_depth",
                                          "text_heads", "embed_dim", "patch")}


def test_text_encoder_is_pooled_at_eos_and_ignores_padding():
    enc = clip.TextEncoder(20, 8, 16, 1, 2, eos_id=2, rngs=nnx.Rngs(0))
    t = jnp.array([[1, 5, 6, 2, 0, 0, 0, 0]])
    features, pooled = enc(t)
    assert features.shape == (1, 8, 16) and pooled.shape == (1, 16)
    np.testing.assert_array_equal(pooled[0], features[0, 3])
    _, pooled_junk = enc(t.at[0, 4:].set(7))  # anything after EOS
    np.testing.assert_array_equal(pooled_junk, pooled)
    _, pooled_other = enc(t.at[0, 1].set(9))  # a word before EOS
    assert not np.allclose(pooled_other, pooled)
    with pytest.raises(ValueError, match="at most 8"):
        enc(jnp.ones((1, 9), jnp.int32))


@pytest.mark.parametrize("encoder", ["vit", "conv"])
def test_embeddings_are_unit_vectors(encoder):
    config = clip.Config(encoder=encoder, **_tiny_kwargs())
    model = clip.build(config, TOKENIZER, nnx.Rngs(0))
    x = model.encode_images(jax.random.uniform(jax.random.key(0), (3, 32, 32, 3), minval=-1, maxval=1))
    y = model.encode_texts(tokens([5, 6], [6, 7]))
    assert x.shape == (3, 16) and y.shape == (2, 16)
    np.testing.assert_allclose(jnp.linalg.norm(x, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(jnp.linalg.norm(y, axis=1), 1.0, rtol=1e-5)


def test_vit_parameter_count_matches_closed_form():
    c = clip.Config()
    model = clip.build(c, TOKENIZER, nnx.Rngs(0))
    count = lambda m: sum(p.size for p in jax.tree.leaves(nnx.state(m, nnx.Param)))  # noqa: E731

    def transformer(D, depth):  # per block: 2 LN + qkv + out + MLP (4D), then the final LN
        return depth * (2 * 2 * D + (3 * D * D + 3 * D) + (D * D + D) + (4 * D * D + 4 * D) + (4 * D * D + D)) + 2 * D

    N, Dp = (c.image_size // c.patch) ** 2, c.patch * c.patch * 3
    vit = (Dp * c.image_width + c.image_width) + N * c.image_width + transformer(c.image_width, c.image_depth)
    text = (300 + c.context_length) * c.text_width + transformer(c.text_width, c.text_depth)
    assert count(model.image_encoder) == vit
    assert count(model.text_encoder) == text
    assert count(model) == vit + text + (c.image_width + c.text_width) * c.embed_dim + 1
    assert count(model) == 613_057  # the default preset, with a 300-token vocabulary


def test_config_rejects_bad_choices():
    with pytest.raises(ValueError, match="encoder"):
        clip.Config(encoder="resnet50")
    with pytest.raises(ValueError, match="loss"):
        clip.Config(loss="triplet")
    with pytest.raises(ValueError, match="divisible"):
        clip.Config(patch=5)
    assert clip.PRESETS["default"] == clip.Config()
    assert set(clip.PRESETS) >= {"default", "tiny", "tour", "gpu"}


# ----------------------------------------------------------------------------- tasks


class StubPipeline:
    """Embeds a one-object shapes image as onehot(colour) + onehot(shape) (normalised), and a text by
    the colour and shape words it names; enough to check the task maths exactly."""

    scale = 10.0

    def __init__(self):
        self.config = types.SimpleNamespace(image_size=32)
        self.texts: list[str] = []

    @staticmethod
    def _vec(color, shape):
        v = np.zeros(10, np.float32)
        if color is not None:
            v[list(shapes.COLORS).index(color)] = 1
        if shape is not None:
            v[6 + shapes.SHAPES.index(shape)] = 1
        return v

    def embed_images(self, images):
        out = []
        for image in images:
            a = shapes.read_attributes(image) or {"color": None, "shape": None}
            out.append(self._vec(a["color"], a["shape"]) + 1e-3)
        return unit(out).astype(np.float32)

    def embed_texts(self, texts):
        self.texts += list(texts)
        words = [t.split() for t in texts]
        return unit([self._vec(next((w for w in ws if w in shapes.COLORS), None),
                               next((w for w in ws if w in shapes.SHAPES), None)) + 1e-3
                     for ws in words]).astype(np.float32)


def test_zero_shot_ensembles_normalised_prompt_embeddings():
    pipe = StubPipeline()
    ex = shapes.generate(24, seed=3)
    probs = zero_shot(pipe, ex["images"])
    assert probs.shape == (24, 24)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(probs.argmax(1), ex["labels"])
    assert "a large red circle at the top left" in pipe.texts  # templates like the training captions
    # the ensemble: w_c = normalize(mean_p normalize(e(t_p(c))))
    templates = ["a {}", "one {} here"]
    w = class_embeddings(pipe, ["red circle", "blue cross"], templates)
    manual = unit([pipe.embed_texts([t.format(c) for t in templates]).mean(0) for c in ["red circle", "blue cross"]])
    np.testing.assert_allclose(w, manual, rtol=1e-6)
    expected = np.exp(10 * pipe.embed_images(ex["images"][:2]) @ manual.T)
    np.testing.assert_allclose(zero_shot(pipe, ex["images"][:2], ["red circle", "blue cross"], templates),
                               expected / expected.sum(1, keepdims=True), rtol=1e-5)
    with pytest.raises(ValueError, match="one"):
        zero_shot(pipe, ex["images"][:2], ["red circle"], ["no placeholder"])


def test_retrieval_recall_by_hand():
    image = np.eye(3, dtype=np.float32)
    text = np.array([[0.9, 0.1, 0], [0, 0.2, 0.8], [0, 0.7, 0.1]], np.float32)  # text 1 prefers image 2
    r = retrieval_recall(image, text, ["a", "b", "c"], ["a", "b", "c"], ks=(1, 2))
    assert r["text_to_image_recall@1"] == pytest.approx(1 / 3)  # text 2 prefers image 1 too
    assert r["text_to_image_recall@2"] == 1.0
    # image 1's best text is 2 (0.7), image 2's best text is 1 (0.8)
    assert r["image_to_text_recall@1"] == pytest.approx(1 / 3)
    # with keys, an image retrieving another image's identical caption counts as a hit
    assert retrieval_recall(image, text, ["a", "b", "b"], ["a", "b", "b"], ks=(1,))["image_to_text_recall@1"] == 1.0


def test_search_returns_best_matches_first():
    pipe = StubPipeline()
    ex = shapes.generate(40, seed=1)
    wanted = [o[0]["color"] == "green" and o[0]["shape"] == "square" for o in ex["objects"]]
    assert sum(wanted) >= 2
    matches = search(pipe, ex["images"], "a green square", k=sum(wanted))
    assert len(matches) == sum(wanted)
    assert [m["score"] for m in matches] == sorted((m["score"] for m in matches), reverse=True)
    for m in matches:
        assert wanted[m["index"]] and m["name"] == f"#{m['index']}"
        np.testing.assert_array_equal(m["image"], ex["images"][m["index"]])
    with pytest.raises(ValueError, match="query"):
        search(pipe, ex["images"], "  ")


def test_search_a_folder_of_images(tmp_path):
    ex = shapes.generate(6, seed=4)
    (tmp_path / "sub").mkdir()
    for i, image in enumerate(ex["images"]):
        Image.fromarray(image).resize((64, 64), Image.NEAREST).save(tmp_path / ("sub" if i % 2 else ".") / f"{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    pairs = [(o[0]["color"], o[0]["shape"]) for o in ex["objects"]]
    assert pairs.count(pairs[3]) == 1
    best = search(StubPipeline(), tmp_path, "a {} {}".format(*pairs[3]), k=1)[0]
    assert best["name"] == str(tmp_path / "sub" / "3.png") and best["image"].shape == (32, 32, 3)
    with pytest.raises(FileNotFoundError):
        search(StubPipeline(), tmp_path / "missing", "a red circle")


def test_linear_probe_reaches_the_optimum():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 5)) * 3
    y = rng.integers(0, 3, 90)
    x = (centers[y] + rng.normal(size=(90, 5))).astype(np.float32)
    W, b = linear_probe(x, y, 3, l2=1e-2)
    assert ((x @ W + b).argmax(1) == y).mean() > 0.95

    def objective(W, b):  # the same objective; its gradient vanishes at the fitted (W, b)
        logits = x @ W + b
        return -jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1).mean() + 0.5e-2 * jnp.sum(W ** 2)

    gW, gb = jax.grad(objective, argnums=(0, 1))(jnp.asarray(W), jnp.asarray(b))
    assert float(jnp.abs(gW).max()) < 1e-4 and float(jnp.abs(gb).max()) < 1e-4


def test_pipeline_embeds_in_batches_and_validates_input():
    config = clip.PRESETS["tiny"]
    ex = shapes.generate(5, seed=2)
    tokenizer = Tokenizer.train(ex["captions"], 270)
    model = clip.build(config, tokenizer, nnx.Rngs(0))
    pipe = ClipPipeline(model, config, tokenizer, batch_size=4)
    x = pipe.embed_images(ex["images"])  # a full chunk of 4 and a padded chunk of 1
    assert x.shape == (5, config.embed_dim)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(pipe.embed_images(ex["images"][4:]), x[4:], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pipe.embed_texts(ex["captions"])[1], pipe.embed_texts(ex["captions"][1:2])[0],
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="uint8"):
        pipe.embed_images(ex["images"][0])
    with pytest.raises(TypeError, match="list"):
        pipe.embed_texts("a red circle")


def test_sample_grid_rows_are_each_querys_search_results():
    """The trainer's grid embeds its pool once for all six queries; row q is `search`'s top 7 for query q."""
    config = clip.PRESETS["tiny"]
    tokenizer = Tokenizer.train(shapes.generate(50, seed=3)["captions"], 270)
    model = clip.build(config, tokenizer, nnx.Rngs(0))
    rng = jax.random.key(5)
    grid = clip.sample_grid(model, config, tokenizer, rng)
    assert grid.shape == (len(clip.GRID_QUERIES) * 7, config.image_size, config.image_size, 3)
    seed = int(jax.random.randint(rng, (), 0, 2**31 - 1))  # the pool sample_grid draws
    pool = np.concatenate([shapes.generate(n, config.image_size, seed=seed, split=split)["images"]
                           for n, split in ((400, "train"), (100, "holdout"))])
    pipe = ClipPipeline(model, config, tokenizer)
    for q, query in enumerate(clip.GRID_QUERIES):
        expected = np.stack([m["image"] for m in search(pipe, pool, query, k=7)])
        np.testing.assert_array_equal(grid[7 * q:7 * q + 7], expected)


# ----------------------------------------------------------------------------- through the trainer


def test_fit_load_and_evaluate_a_tiny_run(tmp_path):
    import minimodal
    from minimodal import train
    from minimodal.clip_tasks import evaluate_pipeline

    config = clip.Config(**{**_tiny_kwargs(), "steps": 3, "batch_size": 16, "n_train": 64, "log_every": 1,
                            "warmup_steps": 1})
    trained = train.fit(clip.FAMILY, config, tmp_path, progress=False)
    rows = train.read_metrics(tmp_path)
    assert [r["step"] for r in rows] == [1, 2, 3] and all(0 <= r["accuracy"] <= 1 for r in rows)
    grid = sorted((tmp_path / "samples").glob("*.png"))
    assert len(grid) == 1  # the search-results grid: 6 queries x 7 matches
    pipe = minimodal.load(tmp_path)
    assert isinstance(pipe, ClipPipeline)
    ex = shapes.generate(4, seed=9)
    np.testing.assert_allclose(pipe.embed_images(ex["images"]),
                               ClipPipeline(trained.model, config, trained.tokenizer).embed_images(ex["images"]),
                               rtol=1e-5, atol=1e-6)
    metrics = evaluate_pipeline(pipe, n=48)
    assert {"zero_shot_accuracy", "zero_shot_accuracy_holdout", "temperature",
            "text_to_image_recall@10", "image_to_text_recall@1"} <= set(metrics)
    assert metrics["temperature"] == pytest.approx(1 / pipe.scale)


@pytest.mark.slow
def test_default_config_reaches_the_zero_shot_target(tmp_path):
    from minimodal import train

    trained = train.fit(clip.FAMILY, clip.Config(), tmp_path, progress=False)
    metrics = clip.evaluate(trained.model, trained.config, trained.tokenizer)
    assert metrics["zero_shot_accuracy"] >= 0.95
