"""The one training loop: learning, files, resumption, devices, failures (faults: tests/test_faults.py)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from minimodal import config as configlib
from minimodal import train
from minimodal.models import register
from toy_family import FAMILY, ToyConfig, toy_examples

TESTS = Path(__file__).parent
register(FAMILY)


def _fit(workdir, devices=None, **overrides):
    return train.fit(FAMILY, configlib.override(ToyConfig(), overrides), workdir, examples=toy_examples(),
                     devices=devices, progress=False)


def _params(model) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))]


def test_fit_learns_and_writes_a_self_describing_workdir(tmp_path):
    trained = _fit(tmp_path)
    rows = train.read_metrics(tmp_path)
    assert [r["step"] for r in rows] == list(range(5, 41, 5))
    assert all({"step", "loss", "accuracy", "grad_norm", "steps_per_sec"} <= r.keys() for r in rows)
    assert rows[-1]["loss"] < 0.5 * rows[0]["loss"] and rows[-1]["accuracy"] == 1.0
    assert json.loads((tmp_path / "run.json").read_text()) == {"model": "toy"}
    assert configlib.load(ToyConfig, tmp_path / "config.json") == trained.config
    assert (tmp_path / "tokenizer.json").exists()
    assert trained.step == 40
    steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert steps == [30, 40]  # every 10 steps, keep_checkpoints=2
    assert train.plot_loss(tmp_path).stat().st_size > 0


def test_load_model_restores_the_trained_weights(tmp_path):
    trained = _fit(tmp_path, steps=20)
    family, model, config, tokenizer = train.load_model(tmp_path)
    assert family is FAMILY and config == trained.config
    for a, b in zip(_params(model), _params(trained.model)):
        np.testing.assert_array_equal(a, b)
    assert int(model.calls[...]) == 20  # non-Param state is checkpointed too


def test_rerunning_a_finished_run_resumes_instead_of_retraining(tmp_path):
    _fit(tmp_path, steps=20)
    again = _fit(tmp_path, steps=20)
    assert again.step == 20 and len(train.read_metrics(tmp_path)) == 4  # no new steps were logged
    longer = _fit(tmp_path, steps=30)  # `steps` may grow on resumption
    assert longer.step == 30 and train.read_metrics(tmp_path)[-1]["step"] == 30



def test_warm_start_sets_weights_of_a_fresh_run_only(tmp_path):
    """`Family.warm_start` runs before step 0 (its weights are what training starts from), never on resume."""
    calls = []

    def warm_start(model, config, tokenizer, workdir):
        calls.append((config.steps, workdir))
        model.linear.bias[...] = jnp.array([5.0, 0.0, 0.0])

    family = dataclasses.replace(FAMILY, warm_start=warm_start)
    config = ToyConfig(steps=1, lr=1e-6, warmup_steps=1)
    trained = train.fit(family, config, tmp_path, examples=toy_examples(), progress=False)
    np.testing.assert_allclose(trained.model.linear.bias[...], [5.0, 0.0, 0.0], atol=1e-3)
    train.fit(family, dataclasses.replace(config, steps=2), tmp_path, examples=toy_examples(), progress=False)
    assert calls == [(1, tmp_path)]  # once, told the work directory


# SIGKILL at random points (inside checkpoint writes too) -> bitwise resumption: tests/test_faults.py


@pytest.mark.skipif(jax.device_count() < 8, reason="needs XLA_FLAGS=--xla_force_host_platform_device_count=8")
def test_one_device_and_eight_devices_give_the_same_loss_curve(tmp_path):
    _fit(tmp_path / "one", devices=jax.devices()[:1])
    _fit(tmp_path / "eight", devices=jax.devices()[:8])
    one, eight = train.read_metrics(tmp_path / "one"), train.read_metrics(tmp_path / "eight")
    np.testing.assert_allclose([r["loss"] for r in one], [r["loss"] for r in eight], rtol=1e-5)


def test_micro_batches_take_the_same_steps_as_the_whole_batch(tmp_path):
    # the toy loss is a mean over examples and ignores its key: the mean of k slices' gradients is the gradient
    whole = _fit(tmp_path / "whole", steps=6, log_every=1)
    devices = jax.devices()[:8] if jax.device_count() >= 8 else None  # slices across every device's shard
    sliced = _fit(tmp_path / "sliced", steps=6, log_every=1, micro_batches=4, devices=devices)
    for a, b in zip(_params(whole.model), _params(sliced.model)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    rows_whole, rows_sliced = train.read_metrics(tmp_path / "whole"), train.read_metrics(tmp_path / "sliced")
    assert len(rows_whole) == len(rows_sliced) == 6
    for one, four in zip(rows_whole, rows_sliced):  # grad_norm: the mean of the slices' gradients, not their sum
        np.testing.assert_allclose([one[k] for k in ("loss", "accuracy", "grad_norm")],
                                   [four[k] for k in ("loss", "accuracy", "grad_norm")], rtol=1e-5)
    assert int(sliced.model.calls[...]) == 4 * 6  # the non-Param state went through every slice in turn
    with pytest.raises(ValueError, match="multiple of micro_batches=3"):
        _fit(tmp_path / "bad", micro_batches=3)
    contrastive = dataclasses.replace(FAMILY, per_example_loss=False)  # e.g. CLIP: its negatives are the batch
    with pytest.raises(ValueError, match="not a mean of per-example terms"):
        train.fit(contrastive, ToyConfig(micro_batches=2), tmp_path / "clip", examples=toy_examples(),
                  progress=False)


def test_micro_batch_slices_take_their_rows_and_their_own_keys():
    # slice j: rows j, j + k, ... and the key fold_in(rng, j), so dropout / noise / timesteps differ per slice
    seen = []

    def grad_fn(params, rest, part, key):  # records what each slice was given; a zero loss and gradient
        seen.append((np.asarray(part["x"]), np.asarray(jax.random.key_data(key))))
        return (jnp.float32(0.0), ({}, rest)), params

    rng = jax.random.key(3)
    train._accumulate(grad_fn, {"w": jnp.zeros(2)}, {}, {"x": jnp.arange(8)}, rng, 4)
    assert len(seen) == 4
    for j, (rows, key) in enumerate(seen):
        np.testing.assert_array_equal(rows, [j, j + 4])
        np.testing.assert_array_equal(key, jax.random.key_data(jax.random.fold_in(rng, j)))
    assert len({key.tobytes() for _, key in seen}) == 4


def test_batch_size_must_split_over_devices(tmp_path):
    if jax.device_count() < 2:
        pytest.skip("needs several devices")
    with pytest.raises(ValueError, match="multiple of the"):
        _fit(tmp_path, batch_size=jax.device_count() + 1)


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    with pytest.raises(train.TrainingDiverged, match=r"at step 13;.*step 10"):
        _fit(tmp_path, nan_after=12)  # the 13th step's loss is NaN
    _, model, _, _ = train.load_model(tmp_path)
    assert int(model.calls[...]) == 10
    assert all(np.isfinite(p).all() for p in _params(model))


def test_ctrl_c_saves_a_checkpoint_then_stops(tmp_path, monkeypatch):
    from minimodal.data import pipeline

    batch = pipeline.Batches.batch

    def batch_with_interrupt(self, step):
        if step == 6:
            os.kill(os.getpid(), __import__("signal").SIGINT)
        return batch(self, step)

    monkeypatch.setattr(pipeline.Batches, "batch", batch_with_interrupt)
    with pytest.raises(KeyboardInterrupt, match="checkpoint saved at step 7"):
        _fit(tmp_path)
    monkeypatch.setattr(pipeline.Batches, "batch", batch)
    assert _fit(tmp_path).step == 40  # and the next run resumes from it


def test_workdir_of_another_model_or_config_is_refused(tmp_path):
    _fit(tmp_path, steps=10)
    with pytest.raises(train.WorkdirMismatch, match=r"lr: 0.05 -> 0.1"):
        _fit(tmp_path, steps=10, lr=0.1)
    (tmp_path / "run.json").write_text('{"model": "clip"}')
    with pytest.raises(train.WorkdirMismatch, match="holds a 'clip' run"):
        _fit(tmp_path, steps=10)


def test_ema_is_the_exponential_average_of_the_weights(tmp_path):
    # ema_n = d ema_{n-1} + (1 - d) p_n, ema_0 = p_0; with d = 1/2 over 2 steps: p0/4 + p1/4 + p2/2
    ema = _fit(tmp_path / "ema", steps=2, warmup_steps=0, ema_decay=0.5, log_every=1)
    raw = tmp_path / "raw"
    _fit(raw, steps=2, warmup_steps=0, log_every=1, checkpoint_every=1, keep_checkpoints=3)
    p0 = _params(FAMILY.build(ToyConfig(), None, nnx.Rngs(0)))
    p1, p2 = _params(train.load_model(raw, step=1)[1]), _params(train.load_model(raw)[1])
    assert not np.allclose(p1[0], p0[0]) and not np.allclose(p2[0], p1[0])
    for e, a, b, c in zip(_params(ema.model), p0, p1, p2):
        np.testing.assert_allclose(e, a / 4 + b / 4 + c / 2, rtol=1e-5, atol=1e-6)


def test_optimizer_schedule_and_weight_decay_mask():
    config = ToyConfig(steps=100, warmup_steps=10, lr=1.0, weight_decay=0.5, grad_clip=1e9)
    tx = train.make_optimizer(config)
    params = {"w": np.ones((2, 2), np.float32), "b": np.ones((2,), np.float32)}
    state = tx.init(params)
    zeros = {"w": np.zeros((2, 2), np.float32), "b": np.zeros((2,), np.float32)}
    updates, _ = tx.update(zeros, state, params)
    assert float(abs(updates["w"]).max()) == 0.0  # lr is 0 at step 0 of the warm-up
    for _ in range(11):  # the 11th update runs at step 10, the end of the warm-up
        updates, state = tx.update(zeros, state, params)
    # at the end of warm-up lr = 1: decoupled decay moves w by -lr * wd * w; biases are not decayed
    np.testing.assert_allclose(updates["w"], -0.5 * np.ones((2, 2)), rtol=1e-6)
    np.testing.assert_allclose(updates["b"], 0.0)
    schedule = optax.warmup_cosine_decay_schedule(0.0, 1.0, 10, 100, end_value=0.05)
    assert float(schedule(100)) == pytest.approx(0.05)


def test_a_resumed_run_may_change_its_sampling_defaults_but_not_its_training():
    from minimodal import dalle, ddpm

    old = dalle.Config()
    assert configlib.incompatible_keys(old, dalle.Config(temperature=1.0, top_k=0, steps=5000)) == []
    assert configlib.incompatible_keys(old, dalle.Config(top_k=0, lr=3e-3, dim=64)) == ["dim", "lr"]
    assert configlib.incompatible_keys(ddpm.Config(), ddpm.Config(guidance=5.0, sample_steps=20)) == []
    assert configlib.incompatible_keys(ToyConfig(), ToyConfig(lr=0.1)) == ["lr"]


@pytest.mark.parametrize("show", [False, True])
def test_a_fit_inside_a_fit_shows_its_bar_as_the_outer_one_does(tmp_path, capsys, show):
    def prepare(config, examples, tokenizer, workdir):  # a family that trains another model first
        train.fit(FAMILY, ToyConfig(steps=2, log_every=1), workdir / "first", examples=toy_examples())
        return examples

    outer = dataclasses.replace(FAMILY, name="outer", prepare=prepare)
    train.fit(outer, ToyConfig(steps=2, log_every=1), tmp_path, examples=toy_examples(), progress=show)
    assert (tmp_path / "first" / "checkpoints" / "2").exists()
    err = capsys.readouterr().err
    assert ("train outer" in err, "train toy" in err) == (show, show)
