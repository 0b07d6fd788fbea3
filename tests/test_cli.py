"""The command line: train / resume / plot, and clear one-line errors for bad input."""

from __future__ import annotations

import json

import pytest

from minimodal import cli, train
from minimodal.models import register
from toy_family import FAMILY

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
                                                 ("ema_decay=1", "ema_decay must be in [0, 1)")])
def test_impossible_training_values_are_refused(tmp_path, capsys, assignment, message):
    assert cli.main(["train", "toy", "--workdir", str(tmp_path / "w"), "--quiet", *TOY, assignment]) == 2
    assert message in capsys.readouterr().err
