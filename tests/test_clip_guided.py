"""VQGAN (the image tokenizer with a patch discriminator, trained by the trainer's second optimiser) and
CLIP-guided generation through it or on raw pixels: closed forms, gradients, determinism, errors, the CLI."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from minimodal import cli, clip, clip_guided, train, vqvae
from minimodal.config import TrainConfig, override

VQGAN_TINY = override(vqvae.PRESETS["tiny"], {"image_size": 16, "n_train": 64, "steps": 3, "log_every": 1,
                                              "checkpoint_every": 3, "disc_weight": 0.5, "disc_start": 1,
                                              "perceptual_weight": 0.1, "disc_width": 8})
CLIP_TINY = override(clip.PRESETS["tiny"], {"image_size": 16, "n_train": 64, "batch_size": 16, "steps": 3,
                                            "log_every": 3, "checkpoint_every": 3})
FAST = {"steps": 10, "cutouts": 4}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A CLIP and a VQGAN (perceptual term from that CLIP) trained for 3 steps each at 16 px, and a second CLIP
    at 32 px from another seed (a judge whose input is not the image's size)."""
    root = tmp_path_factory.mktemp("runs")
    no_grid = lambda family: dataclasses.replace(family, sample_grid=None)  # noqa: E731 (saves compiling one)
    train.fit(no_grid(clip.FAMILY), CLIP_TINY, root / "clip", progress=False)
    judge_config = override(CLIP_TINY, {"image_size": 32, "seed": 1})
    train.fit(no_grid(clip.FAMILY), judge_config, root / "judge", progress=False)
    config = dataclasses.replace(VQGAN_TINY, perceptual_clip=str(root / "clip"))
    trained = train.fit(no_grid(vqvae.FAMILY), config, root / "vqgan", progress=False)
    return {"root": root, "clip": root / "clip", "vqgan": root / "vqgan", "judge": root / "judge", "trained": trained}


@pytest.fixture(scope="module")
def guided(runs):
    return clip_guided.ClipGuided(runs["clip"], runs["vqgan"])


# ----------------------------------------------------------------------------------------------- VQGAN
def test_hinge_losses_on_known_logits():
    real, fake = jnp.array([2.0, 0.5, -1.0]), jnp.array([-2.0, 0.0, 1.0])
    # ½ [mean(0, 0.5, 2) + mean(0, 1, 2)] = ½ [5/6 + 1]
    np.testing.assert_allclose(vqvae.hinge_d_loss(real, fake), 0.5 * (2.5 / 3 + 3 / 3), rtol=1e-6)
    assert float(vqvae.hinge_d_loss(jnp.ones(4), -jnp.ones(4))) == 0.0  # margins met: no loss
    np.testing.assert_allclose(vqvae.hinge_g_loss(fake), 1 / 3, rtol=1e-6)


def test_adaptive_weight_closed_form_on_a_linear_last_layer():
    # last layer y = W h; L_rec = ½‖y - t‖², L_GAN = -a·y  ->  ∇_W L_rec = (y - t) hᵀ, ∇_W L_GAN = -a hᵀ
    W, h = jax.random.normal(jax.random.key(0), (3, 4)), jnp.array([1.0, -2.0, 0.5, 3.0])
    t, a = jnp.array([0.3, -1.0, 2.0]), jnp.array([1.0, 0.5, -2.0])
    g_rec = jax.grad(lambda W: 0.5 * jnp.sum((W @ h - t) ** 2))(W)
    g_gan = jax.grad(lambda W: -a @ (W @ h))(W)
    y = np.asarray(W @ h)
    expected = (np.linalg.norm(y - t) * np.linalg.norm(h)) / (np.linalg.norm(a) * np.linalg.norm(h) + 1e-4)
    np.testing.assert_allclose(vqvae.adaptive_weight(g_rec, g_gan), expected, rtol=1e-5)
    assert float(vqvae.adaptive_weight(g_rec, 0 * g_gan)) == 1e4  # clipped
    assert float(jax.grad(lambda W: vqvae.adaptive_weight(W @ h, g_gan))(jnp.ones((3, 4))).sum()) == 0.0


def test_vqgan_loss_adaptive_weight_matches_autodiff_at_the_last_layer(runs):
    model = nnx.clone(runs["trained"].model)  # past disc_start, with the CLIP perceptual term
    images = jax.random.uniform(jax.random.key(1), (4, 16, 16, 3), minval=-1, maxval=1)

    @nnx.jit
    def both(model):
        # brute force first (the loss then moves the EMA codebook): both losses as functions of the last kernel
        z = model.encoder(images)
        codes = vqvae.nearest_code(z.reshape(-1, z.shape[-1]), model.codebook[...]).reshape(z.shape[:3])
        feats = model.decoder.features(jnp.take(model.codebook[...], codes, axis=0))
        recon = lambda k: model.decoder.head(feats, k)  # noqa: E731
        kernel = model.decoder.conv_out.kernel[...]
        g_rec = jax.grad(lambda k: model.reconstruction_loss(recon(k), images)[0])(kernel)
        g_gan = jax.grad(lambda k: vqvae.hinge_g_loss(model.discriminator(recon(k))))(kernel)
        same = jnp.max(jnp.abs(recon(kernel) - model.decoder.head(feats)))
        lam = jnp.linalg.norm(g_rec) / (jnp.linalg.norm(g_gan) + 1e-4)
        return lam, same, model.vqgan_loss(images, jax.random.key(2))[1]

    expected, same, metrics = both(model)
    assert float(same) < 1e-5  # head(feats, kernel) is the last layer
    assert float(metrics["perceptual"]) > 0 and float(metrics["g_loss"]) != 0  # both terms are on
    np.testing.assert_allclose(metrics["adaptive_weight"], expected, rtol=1e-4)
    # the loss's gradient w.r.t. x̂ is that of L_rec + disc_weight · λ · L_G (handed on by `with_gradient`)
    x = jnp.arange(6.0)
    assert float(vqvae.with_gradient(x, 2 * x)) == 0.0
    np.testing.assert_array_equal(jax.grad(lambda x: vqvae.with_gradient(x, 2 * x))(x), 2 * x)


class _Pair(nnx.Module):
    def __init__(self, rngs):
        self.gen = nnx.Linear(3, 2, kernel_init=nnx.initializers.ones, rngs=rngs)
        self.critic = nnx.Linear(2, 1, kernel_init=nnx.initializers.ones, rngs=rngs)


def test_each_optimiser_changes_only_its_own_parameters():
    """The main loss trains the Params outside the group, the group's loss the group's only: with one of the two
    losses multiplied by 0 (plain Adam: no weight decay), only the other side moves."""
    def main_loss(m, b, r):
        return b["main"] * (jnp.sum(m.critic(m.gen(b["x"])) ** 2) + jnp.sum(m.gen.kernel[...])), {}

    def critic_loss(m, b, r):
        return b["critic"] * jnp.sum(m.critic(jax.lax.stop_gradient(m.gen(b["x"])))), {"v": jnp.ones(())}

    config = TrainConfig(steps=10, warmup_steps=0, lr=0.1)
    family = train.Family("pair", TrainConfig, {}, lambda c, t, r: _Pair(r), main_loss,
                          groups=(train.Group("critic", critic_loss, lambda c: optax.adam(0.1)),))
    model = _Pair(nnx.Rngs(0))
    groups = train.group_optimizers(family, model, config)
    graphdef, state = train._initial_state(model, optax.adam(0.1), config, groups)
    assert set(state["groups"]) == {"critic"} and "critic" not in state["params"]
    step = jax.jit(train.make_train_step(family, graphdef, optax.adam(0.1), config, groups))
    moved = lambda a, b: any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))  # noqa: E731
    for main_scale, critic_scale in ((1.0, 0.0), (0.0, 1.0)):
        batch = {"x": jnp.ones((4, 3)), "main": jnp.float32(main_scale), "critic": jnp.float32(critic_scale)}
        new, metrics = step(state, batch)
        assert moved(state["params"], new["params"]) == bool(main_scale)
        assert moved(state["groups"]["critic"]["params"], new["groups"]["critic"]["params"]) == bool(critic_scale)
        assert {"critic_loss", "critic_grad_norm", "critic_v"} <= metrics.keys()


def test_vqgan_trains_through_the_one_fit_and_reloads(runs):
    rows = train.read_metrics(runs["vqgan"])
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert rows[0]["discriminator_loss"] == 0.0 and rows[0]["g_loss"] == 0.0  # warm-up: no adversary yet
    assert rows[2]["discriminator_loss"] > 0 and rows[2]["adaptive_weight"] > 0
    assert all(np.isfinite(v) for r in rows for v in r.values())
    _, model, config, _ = train.load_model(runs["vqgan"])
    assert isinstance(model.discriminator, vqvae.PatchDiscriminator) and config.perceptual_clip
    # the perceptual network is the CLIP's image encoder, frozen (no Param: no optimiser sees it)
    _, clip_model, _, _ = train.load_model(runs["clip"])
    np.testing.assert_array_equal(model.perceptual.encoder.pos_ND[...], clip_model.image_encoder.pos_ND[...])
    assert not jax.tree.leaves(nnx.state(model.perceptual, nnx.Param))
    metrics = vqvae.evaluate(model, config, None, None)  # + edge ratio and the grader on reconstructions
    assert {"psnr", "usage", "edge_ratio", "recon_fidelity"} <= metrics.keys()
    # the plain VQ-VAE builds neither a discriminator nor a perceptual network
    plain = vqvae.build(vqvae.PRESETS["tiny"], None, nnx.Rngs(0))
    assert plain.discriminator is None and plain.perceptual is None


def test_laplacian_fallback_and_config_checks():
    x = jnp.asarray(np.random.default_rng(0).uniform(size=(2, 16, 16, 3)), jnp.float32)
    lap1 = jax.jit(vqvae.laplacian_pyramid_l1, static_argnums=2)
    # zero for equal images; a constant offset lives only in the low-pass level: mean |c| / (levels + 1)
    np.testing.assert_allclose(lap1(jnp.concatenate([x, x + 0.4]), jnp.concatenate([x, x]), 3), 0.4 / 4 / 2, rtol=1e-5)
    assert float(lap1(x, x, 3)) == 0.0
    with pytest.raises(ValueError, match="kind='vq'"):
        vqvae.Config(kind="gumbel", disc_weight=0.5)
    with pytest.raises(ValueError, match="not a trained CLIP"):
        vqvae.build(override(VQGAN_TINY, {"perceptual_clip": "/nonexistent"}), None, nnx.Rngs(0))


# ------------------------------------------------------------------------------------ CLIP-guided
def test_straight_through_latents_draw_codebook_vectors_and_pass_gradients(guided):
    graphdef, state = nnx.split(guided.vqgan.model)

    @jax.jit
    def check(state, theta):
        vq = nnx.merge(graphdef, state)
        D = theta.shape[-1]
        snapped = jnp.take(vq.codebook[...], vqvae.nearest_code(theta.reshape(-1, D), vq.codebook[...]), axis=0)
        exact = jnp.all(clip_guided.snap(theta.reshape(-1, D), snapped) == snapped)  # exactly codebook vectors
        drawn = clip_guided.render(vq, theta) - jnp.clip(vq.decoder(snapped.reshape(theta.shape)), -1, 1)
        return exact, jnp.max(jnp.abs(drawn)), jax.grad(lambda t: jnp.sum(clip_guided.render(vq, t) ** 2))(theta)

    vq = guided.vqgan.model
    exact, drawn, grad = check(state, jax.random.normal(jax.random.key(0), (2, vq.grid, vq.grid, 8)))
    assert bool(exact) and float(drawn) == 0.0
    assert np.isfinite(grad).all() and float(jnp.abs(grad).sum()) > 0


def test_cutouts_shapes_and_whole_image_identity():
    x = jnp.asarray(np.random.default_rng(0).uniform(size=(16, 16, 3)), jnp.float32)
    cut = clip_guided.cutouts  # eagerly: two small einsums, cheaper than compiling two programs
    np.testing.assert_allclose(cut(x, jax.random.key(1), 0, 16, 0.5, 0.1, True)[0], x, atol=1e-6)
    full = cut(x, jax.random.key(1), 3, 16, 1.0, 0.0, False)
    np.testing.assert_allclose(full, jnp.broadcast_to(x, full.shape), atol=1e-5)  # side S at offset 0


def test_total_variation_closed_form():
    # a vertical edge: one column step of height 2 in each of S rows -> horizontal mean 2·S / (S·(S-1)·3) per
    # channel; no vertical differences at all
    S = 6
    x = (-jnp.ones((1, S, S, 3))).at[:, :, 3:, 0].set(1.0)
    np.testing.assert_allclose(clip_guided.total_variation(x), [2.0 * S / (S * (S - 1) * 3)], rtol=1e-6)
    assert float(clip_guided.total_variation(jnp.zeros((2, S, S, 3))).sum()) == 0.0


def test_blob_start_is_a_grey_disc_in_the_centre_encoded_like_any_picture(guided):
    """init="blob" (the default): mid grey (0) on the black canvas (-1), a centred disc BLOB_DIAMETER · S across."""
    S = 32
    x = np.asarray(clip_guided.start_image(S, "blob"))
    assert x.shape == (S, S, 3) and set(np.unique(x)) == {-1.0, 0.0} and (x == x[..., :1]).all()
    disc = x[..., 0] == 0.0
    np.testing.assert_array_equal(disc, disc.T)  # round: symmetric under a transpose and both flips
    np.testing.assert_array_equal(disc, disc[::-1])
    np.testing.assert_array_equal(disc, disc[:, ::-1])
    rows, cols = np.nonzero(disc)
    assert rows.min() + rows.max() == cols.min() + cols.max() == S - 1  # centred
    assert abs(rows.max() - rows.min() + 1 - clip_guided.BLOB_DIAMETER * S) <= 1
    assert abs(disc.sum() / (np.pi * (clip_guided.BLOB_DIAMETER * S / 2) ** 2) - 1) < 0.15  # a disc's area
    vq, keys = guided.vqgan.model, jax.random.split(jax.random.key(0), 2)
    theta = clip_guided.initial_theta(vq, keys, 16, "blob")
    np.testing.assert_allclose(theta[1], vq.encoder(clip_guided.start_image(16, "blob")[None])[0], atol=1e-6)
    pixels = np.tanh(clip_guided.initial_theta(None, keys, 16, "blob"))  # x = tanh(u): the picture itself
    np.testing.assert_allclose(pixels[0], np.clip(clip_guided.start_image(16, "blob"), -0.95, 0.95), atol=1e-6)


def test_the_default_start_is_the_blob(runs):
    _, progress = clip_guided.generate(["a red circle"], clip=runs["clip"], steps=1, cutouts=0, return_progress=True)
    start = progress[0, 0]  # raw pixels: frame 0 is x = tanh(u0), the start itself
    assert tuple(start[8, 8]) in ((127, 127, 127), (128, 128, 128)) and start[0, 0].max() <= 7  # grey on (near) black


def test_blank_start_is_the_encoded_empty_canvas(guided):
    vq = guided.vqgan.model
    theta = clip_guided.initial_theta(vq, jax.random.split(jax.random.key(0), 3), 16, "blank")  # (3, h, w, D)
    np.testing.assert_allclose(theta[1], vq.encoder(-jnp.ones((1, 16, 16, 3)))[0], atol=1e-6)
    np.testing.assert_array_equal(theta[0], theta[2])  # every prompt starts from the same canvas
    pixels = clip_guided.initial_theta(None, jax.random.split(jax.random.key(0), 2), 8, "blank")
    np.testing.assert_allclose(np.tanh(pixels), -0.95, rtol=1e-6)  # a near-black picture
    random = clip_guided.initial_theta(vq, jax.random.split(jax.random.key(0), 2), 16, "random")
    codebook = np.asarray(vq.codebook[...])
    assert all(any(np.array_equal(v, e) for e in codebook) for v in np.asarray(random).reshape(-1, codebook.shape[1]))


def test_clip_score_rises_and_a_seed_fixes_the_result(guided):
    prompts = ["a red circle", "a blue square"]
    out = guided.optimise(prompts, seed=0, progress_every=5, **FAST)
    assert out["images"].shape == (2, 16, 16, 3) and out["images"].dtype == np.uint8
    assert out["scores"].shape == (10, 2) and out["progress"].shape == (3, 2, 16, 16, 3)
    assert (out["scores"][-3:].mean(0) > out["scores"][:3].mean(0)).all()
    np.testing.assert_array_equal(out["progress"][-1], out["images"])
    again = guided.optimise(prompts, seed=0, progress_every=5, **FAST)
    np.testing.assert_array_equal(again["images"], out["images"])
    other = guided.optimise(prompts, seed=1, progress_every=5, **FAST)
    assert not np.array_equal(other["images"], out["images"])


def test_candidates_keep_the_judges_pick(runs, guided):
    """candidates=2 on prompts [a, b] draws with the keys of rows 0..3, i.e. it optimises the four images of
    candidates=1 on [a, a, b, b]; the judge (another CLIP, at 32 px: it sees the 16 px images resized) keeps the
    one of each pair it scores higher, with its scores and frames."""
    judged = clip_guided.ClipGuided(runs["clip"], runs["vqgan"], judge=runs["judge"])
    prompts = ["a red circle", "a blue square"]
    each = guided.optimise([p for p in prompts for _ in range(2)], seed=3, progress_every=5, **FAST)
    kept = judged.optimise(prompts, seed=3, candidates=2, progress_every=5, **FAST)
    assert kept["judge_scores"].shape == (2, 2)
    judge = judged.judge  # the judge's cosines of the four candidates, on their uint8 images resized to 32 px
    x_RSS3 = jnp.asarray(each["images"], jnp.float32) / 127.5 - 1.0
    emb_RE = judge.model.encode_images(jax.vmap(lambda x: clip_guided.resized(x, 32))(x_RSS3))
    cos_PN = np.sum(np.asarray(emb_RE) * np.repeat(judge.embed_texts(prompts), 2, axis=0), axis=1).reshape(2, 2)
    np.testing.assert_allclose(kept["judge_scores"], cos_PN, atol=0.02)  # float images vs their uint8 rounding
    assert (np.abs(np.diff(cos_PN, axis=1)) > 1e-3).all()  # the candidates differ: the pick is a real choice
    rows = 2 * np.arange(2) + np.argmax(kept["judge_scores"], axis=1)
    np.testing.assert_array_equal(kept["images"], each["images"][rows])
    np.testing.assert_allclose(kept["scores"], each["scores"][:, rows], rtol=1e-5, atol=1e-6)  # cosines
    np.testing.assert_array_equal(kept["progress"], each["progress"][:, rows])
    assert not np.array_equal(kept["images"], each["images"][2 * np.arange(2) + np.argmin(cos_PN, axis=1)])


def test_raw_pixel_route(runs, guided):
    images, progress = clip_guided.generate(["a green triangle"], clip=runs["clip"], steps=12, cutouts=0,
                                            return_progress=True)
    assert images.shape == (1, 16, 16, 3) and progress.shape == (13, 1, 16, 16, 3)  # start + every step
    start, end = guided.clip_score(np.concatenate([progress[0], images]), ["a green triangle"] * 2)
    assert end > start  # no cut-outs: the optimised score is the whole image's


@pytest.mark.parametrize("options, message", [
    ({"stepz": 3}, "unknown option 'stepz'"),
    ({"steps": "many"}, "option 'steps' must be int"),
    ({"steps": 0}, "steps must be >= 1"),
    ({"cutouts": -1}, "cutouts >= 0"),
    ({"lr": -0.1}, "lr must be positive"),
    ({"cut_min": 0.0}, "cut_min must be in"),
    ({"progress_every": 0}, "progress_every must be in"),
    ({"init": "noise"}, "init must be one of"),
    ({"tv_weight": -1.0}, "tv_weight must be >= 0"),
    ({"image_size": 32}, "image_size is the VQGAN's"),
    ({"candidates": 0}, "candidates must be >= 1"),
])
def test_bad_options_are_clear_errors(guided, options, message):
    with pytest.raises(ValueError, match=message):
        guided.generate(["a red circle"], **options)


def test_bad_inputs_are_clear_errors(runs, guided):
    with pytest.raises(ValueError, match="holds a 'clip' model"):
        clip_guided.ClipGuided(runs["clip"], vqgan=runs["clip"])
    with pytest.raises(ValueError, match="judge=.*holds a 'vqvae' model"):
        clip_guided.ClipGuided(runs["clip"], judge=runs["vqgan"])
    with pytest.raises(TypeError, match="judge= must be a CLIP"):
        clip_guided.ClipGuided(runs["clip"], judge=guided.vqgan)
    with pytest.raises(ValueError, match="needs clip=DIR"):
        clip_guided.generate(["a red circle"])
    with pytest.raises(ValueError, match="non-empty"):
        guided.generate([" "])
    with pytest.raises(ValueError, match="split must be"):
        clip_guided.one_object_prompts("test")


def test_one_object_prompts_cover_the_split():
    prompts, objects = clip_guided.one_object_prompts("holdout", per_pair=2)
    assert len(prompts) == 8 and prompts[0] == prompts[1] and objects[0] == {"color": prompts[0].split()[1],
                                                                            "shape": prompts[0].split()[2]}
    assert len(clip_guided.one_object_prompts("train")[0]) == 20


def test_cli_sample_clip_guided_end_to_end(runs, tmp_path, capsys):
    out = tmp_path / "cg.png"
    argv = ["sample", "clip-guided", "--clip", str(runs["clip"]), "--vqgan", str(runs["vqgan"]),
            "--prompt", "a red circle", "--prompt", "a blue square", "-n", "1", "--out", str(out), "steps=10",
            "cutouts=4", "progress_every=5", "--judge", str(runs["judge"]), "candidates=2"]
    assert cli.main(argv) == 0
    assert out.exists() and (tmp_path / "cg_progress.png").exists()
    assert "mean CLIP score" in capsys.readouterr().out
    assert cli.main(["sample", "clip-guided", "--vqgan", str(runs["vqgan"]), "--prompt", "x"]) == 2
    assert "needs --clip" in capsys.readouterr().err
    assert cli.main(["sample", "clip-guided", "--clip", str(runs["clip"]), "--judge", str(runs["judge"]),
                     "--prompt", "x"]) == 2
    assert "add candidates=N" in capsys.readouterr().err
    assert cli.main(["sample", "--prompt", "a red circle"]) == 2
    assert "needs --workdir" in capsys.readouterr().err
