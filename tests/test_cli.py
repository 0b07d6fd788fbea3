"""The command line: train / resume / plot, and clear one-line errors for bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from minimodal import cli, distributed, train
from minimodal.models import register
from toy_family import FAMILY, cli_script

register(FAMILY)
TOY = ["image_size=16", "n_train=64", "classes=24", "batch_size=16", "steps=10", "log_every=5"]


def test_train_then_resume_with_the_saved_config(tmp_path, capsys):
    workdir = str(tmp_path / "run")
    assert cli.main(["train", "toy", "--data", "shapes", "--workdir", workdir, "--quiet", *TOY]) == 0
    assert "trained toy to step 10" in capsys.readouterr().out
    # resuming needs no repeated keys: the saved config is the base, new keys go on top
    assert cli.main(["train", "toy", "--workdir", workdir, "--quiet", "steps=15"]) == 0
    assert [r["step"] for r in train.read_metrics(workdir)] == [5, 10, 15]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["image_size"] == 16
    assert cli.main(["plot", "--workdir", workdir]) == 0
    assert (tmp_path / "run" / "loss.png").exists()


@pytest.mark.parametrize("argv, message", [
    (["train", "nosuch", "--workdir", "{d}"], "unknown model 'nosuch'"),
    (["train", "toy", "--workdir", "{d}", "lr=fast"], "config key 'lr' expects float, got 'fast'"),
    (["train", "toy", "--workdir", "{d}", "stepz=3"], "unknown config key 'stepz'"),
    (["train", "toy", "--workdir", "{d}", "--data", "nowhere"], "unknown data source 'nowhere'"),
    (["train", "toy", "--workdir", "{d}", "--preset", "huge"], "no preset 'huge'"),
    (["eval", "--workdir", "{d}"], "not a minimodal work directory"),
])
def test_bad_input_gives_one_clear_line(tmp_path, capsys, argv, message):
    code = cli.main([a.format(d=tmp_path / "w") for a in argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


def test_option_values_are_typed():
    assert cli._options(["guidance=3", "top_p=0.9", "sampler=ddim", "top_k=none", "x=true"]) == {
        "guidance": 3, "top_p": 0.9, "sampler": "ddim", "top_k": None, "x": True}


@pytest.mark.parametrize("assignment, message", [("batch_size=0", "'batch_size' must be at least 1"),
                                                 ("lr=-1", "lr and grad_clip must be positive"),
                                                 ("ema_decay=1", "ema_decay must be in [0, 1)"),
                                                 ("micro_batches=0", "'micro_batches' must be at least 1")])
def test_impossible_training_values_are_refused(tmp_path, capsys, assignment, message):
    assert cli.main(["train", "toy", "--workdir", str(tmp_path / "w"), "--quiet", *TOY, assignment]) == 2
    assert message in capsys.readouterr().err


def test_cpu_device_count_splits_the_batch_evenly_over_at_most_one_device_per_core():
    cases = [(128, 2), (128, 3), (96, 4), (112, 2), (80, 1), (32, 0), (128, 64), (16, 2), (12, 2), (48, 3), (48, 6)]
    expected = [2, 2, 4, 2, 1, 1, 16, 2, 1, 2, 4]  # powers of two only: 48 on 3 cores is 2, not 3
    assert [distributed.cpu_device_count(batch, cores) for batch, cores in cases] == expected
    assert distributed.MIN_PER_CPU_DEVICE == 8  # so 128 splits at most 16 ways, and 12 not at all


ONE_PER_CORE = textwrap.dedent("""
    import jax
    from minimodal import distributed
    count = distributed.one_cpu_device_per_core(96)
    print(count, jax.device_count(), distributed.one_cpu_device_per_core(64), distributed.usable_cores())
""")
STARTED_FIRST = textwrap.dedent("""
    import jax
    from minimodal import distributed
    print(jax.device_count(), distributed.one_cpu_device_per_core(96), jax.device_count())
""")


def _without_device_settings(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}
    return {**env, **extra}


@pytest.mark.parametrize("setting, devices", [
    ({}, None),
    ({"JAX_NUM_CPU_DEVICES": "5"}, 5),
    ({"XLA_FLAGS": "--xla_force_host_platform_device_count=3"}, 3),
])
def test_one_cpu_device_per_core_unless_a_count_was_chosen(setting, devices):
    out = subprocess.run([sys.executable, "-c", ONE_PER_CORE], env=_without_device_settings(**setting),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-1500:]
    count, device_count, again, cores = out.stdout.split()
    if devices is None:  # nobody chose: one per core (as many as split 96 evenly)
        assert int(count) == int(device_count) == distributed.cpu_device_count(96, int(cores))
    else:  # the user's count stands
        assert (count, int(device_count)) == ("None", devices)
    assert again == "None"  # once set, the count stays


def test_one_cpu_device_per_core_changes_nothing_once_jax_has_started():
    out = subprocess.run([sys.executable, "-c", STARTED_FIRST], env=_without_device_settings(),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-1500:]
    assert out.stdout.split() == ["1", "None", "1"]


def test_clip_training_on_one_device_resumes_split_over_the_cores(tmp_path):
    workdir = str(tmp_path / "clip")
    argv = [sys.executable, "-m", "minimodal", "train", "clip", "--preset", "tiny", "--data", "shapes",
            "--workdir", workdir, "--quiet", "log_every=2", "checkpoint_every=2"]
    one = subprocess.run([*argv, "steps=4"], env=_without_device_settings(JAX_NUM_CPU_DEVICES="1"),
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-1500:]
    assert "split over" not in one.stderr
    split = subprocess.run([*argv, "steps=6"], env=_without_device_settings(), capture_output=True, text=True,
                           timeout=300)
    assert split.returncode == 0, split.stderr[-1500:]
    count = distributed.cpu_device_count(32, distributed.usable_cores())  # tiny: 32 pairs a batch
    assert ("split over" in split.stderr) == (count > 1)
    assert count == 1 or f"each batch is split over {count} CPU devices" in split.stderr
    assert f"resuming {workdir} from step 4" in split.stderr
    assert [r["step"] for r in train.read_metrics(workdir)] == [2, 4, 6]


def test_only_slices_of_at_least_8_examples_per_device_are_split(tmp_path):
    script = cli_script(tmp_path / "split_toy.py", one_device_per_core=True)
    workdir = str(tmp_path / "toy")
    argv = [sys.executable, str(script), "train", "toy", "--data", "shapes", "--workdir", workdir, "--quiet",
            "image_size=16", "n_train=64", "classes=24", "batch_size=32", "log_every=2", "checkpoint_every=2"]
    cores = distributed.usable_cores()
    for steps, slices in ((4, 2), (6, 4)):  # 2 slices of 16 split over 2 cores; 4 slices of 8 do not
        run = subprocess.run([*argv, f"steps={steps}", f"micro_batches={slices}"], env=_without_device_settings(),
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-1500:]
        count = distributed.cpu_device_count(32 // slices, cores)
        assert count == (min(cores, 2) if slices == 2 else 1)
        assert ("split over" in run.stderr) == (count > 1)
        assert count == 1 or f"each batch is split over {count} CPU devices" in run.stderr
    assert [r["step"] for r in train.read_metrics(workdir)] == [2, 4, 6]
