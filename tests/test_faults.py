"""Faults a real disk and real users produce: kills mid-write, flipped bytes, hand-edited files, a second
training on one directory, a full or read-only disk, and several processes training one run."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from minimodal import cli, train
from minimodal import config as configlib
from minimodal.checkpoints import MANIFEST, CheckpointDamaged, Checkpoints, CheckpointWriteError
from minimodal.models import register
from minimodal.workdir import LOCK_FILE, TrainingLock, WorkdirBusy, WorkdirError
from toy_family import FAMILY, ToyConfig, cli_script, toy_examples

TESTS = Path(__file__).parent
register(FAMILY)


def _fit(workdir, **overrides):
    return train.fit(FAMILY, configlib.override(ToyConfig(), overrides), workdir, examples=toy_examples(),
                     progress=False)


def _params(model) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))]


def _assert_same_params(a, b):
    for x, y in zip(_params(a), _params(b), strict=True):
        np.testing.assert_array_equal(x, y)


# ----------------------------------------------------------------------------- SIGKILL anywhere

KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import numpy as np, jax
    from flax import nnx
    sys.path.insert(0, {tests!r})
    from minimodal import checkpoints, train
    from minimodal.data import pipeline
    from toy_family import FAMILY, ToyConfig, cli_script, toy_examples
    workdir, kind, kill_step, phase = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    die = lambda: os.kill(os.getpid(), signal.SIGKILL)

    batch = pipeline.Batches.batch
    def batch_or_die(self, step):
        if kind == "batch" and step == kill_step:
            die()
        return batch(self, step)
    pipeline.Batches.batch = batch_or_die

    def wrap(name):  # kill just before the save phase `name` of checkpoint `kill_step`
        original = getattr(checkpoints.Checkpoints, name)
        def phase_or_die(self, *args):
            if kind == "save" and phase == name and self._saving == kill_step:
                die()
            return original(self, *args)
        setattr(checkpoints.Checkpoints, name, phase_or_die)
    for name in ("_write_state", "_write_manifest", "_publish", "_prune"):
        wrap(name)
    save = checkpoints.Checkpoints.save
    def save_noting_step(self, step, state):
        self._saving = step
        return save(self, step, state)
    checkpoints.Checkpoints.save = save_noting_step

    write_state = checkpoints.Checkpoints._write_state
    def torn_write(self, path, state):  # Orbax wrote some of its files when the process died
        write_state(self, path, state)
        if kind == "save" and phase == "torn" and self._saving == kill_step:
            files = sorted(p for p in path.rglob("*") if p.is_file())
            for p in files[::2]:
                p.unlink()
            die()
    checkpoints.Checkpoints._write_state = torn_write

    trained = train.fit(FAMILY, ToyConfig(steps=40), workdir, examples=toy_examples(), progress=False)
    leaves = jax.tree.leaves(nnx.state(trained.model))
    np.savez(os.path.join(workdir, "final.npz"), *[np.asarray(x) for x in leaves])
""")

SAVE_PHASES = ("_write_state", "torn", "_write_manifest", "_publish", "_prune")


def _kill_points(rng: np.random.Generator, n: int) -> list[tuple[str, int, str]]:
    """n distinct kill points in the order a run meets them; at least half inside checkpoint saves
    (ToyConfig(steps=40) saves at steps 10, 20, 30 and 40)."""
    saves = [("save", s, p) for s in (10, 20, 30, 40) for p in SAVE_PHASES]
    between = [("batch", s, "-") for s in range(1, 40)]
    chosen = [saves[i] for i in rng.choice(len(saves), n // 2 + 1, replace=False)]
    chosen += [between[i] for i in rng.choice(len(between), n - len(chosen), replace=False)]
    order = lambda p: (p[1], 0, SAVE_PHASES.index(p[2])) if p[0] == "save" else (p[1], 1, 0)  # noqa: E731
    return sorted(chosen, key=order)


def test_sigkill_at_random_points_including_inside_checkpoint_writes_loses_nothing(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(KILL_SCRIPT.format(tests=str(TESTS)))

    def run(workdir, kind="none", step=-1, phase="-"):
        return subprocess.run([sys.executable, str(script), str(workdir), kind, str(step), phase],
                              capture_output=True, text=True, timeout=300)

    points = _kill_points(np.random.default_rng(2026), 6)
    assert sum(p[0] == "save" for p in points) >= 3
    killed = tmp_path / "killed"
    for kind, step, phase in points:
        result = run(killed, kind, step, phase)
        assert result.returncode == -9, f"{(kind, step, phase)} was not reached: {result.stderr[-2000:]}"
        assert not (killed / "final.npz").exists()
    resumed = run(killed)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "taking over the stale lock" in resumed.stderr  # the killed runs left their lock behind
    straight = run(tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr[-2000:]
    a, b = np.load(killed / "final.npz"), np.load(tmp_path / "straight" / "final.npz")
    assert len(a.files) == len(b.files)
    for key in b.files:
        np.testing.assert_array_equal(a[key], b[key])
    steps = Checkpoints(killed / "checkpoints").steps()
    assert steps == [30, 40] and not list((killed / "checkpoints").glob(".partial-*"))
    assert not (killed / LOCK_FILE).exists()


# ----------------------------------------------------------------------------- damaged checkpoints


@pytest.fixture(scope="module")
def trained_20(tmp_path_factory) -> Path:
    """A toy run with checkpoints at steps 10 and 20."""
    workdir = tmp_path_factory.mktemp("trained") / "run"
    _fit(workdir, steps=20)
    return workdir


def _checkpoint_files(workdir: Path, step: int) -> list[str]:
    folder = workdir / "checkpoints" / str(step)
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def _flip_byte(path: Path, at: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    i = min(int(len(data) * at), len(data) - 1)
    data[i] ^= 0x01
    path.write_bytes(bytes(data))


def test_every_kind_of_checkpoint_file_is_covered_by_the_manifest(trained_20):
    files = _checkpoint_files(trained_20, 20)
    kinds = {Path(f).name if "/d/" not in f else "data" for f in files}
    assert {MANIFEST, "_METADATA", "_CHECKPOINT_METADATA", "manifest.ocdbt", "data"} <= kinds
    listed = json.loads((trained_20 / "checkpoints" / "20" / MANIFEST).read_text())["files"]
    assert sorted(listed) == [f for f in files if f != MANIFEST]


def _damage_cases(workdir: Path) -> list[tuple[str, str]]:
    """(file, how) for one file of each kind, plus a truncated and a missing one (a half-copied folder)."""
    files = _checkpoint_files(workdir, 20)
    by_kind = {}
    for f in files:
        by_kind.setdefault(Path(f).name if "/d/" not in f else "data", f)
    cases = [(f, "flip") for f in by_kind.values()]
    data = [f for f in files if "/d/" in f]
    return cases + [(data[0], "truncate"), (data[-1], "delete")]


def test_a_damaged_newest_checkpoint_is_named_and_the_intact_one_is_used(trained_20, tmp_path, capfd):
    _, intact, _, _ = train.load_model(trained_20, step=10)
    for file, how in _damage_cases(trained_20):
        workdir = tmp_path / f"{how}-{file.replace('/', '_')}"
        shutil.copytree(trained_20, workdir)
        path = workdir / "checkpoints" / "20" / file
        if how == "flip":
            _flip_byte(path)
        elif how == "truncate":
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        else:
            path.unlink()
        capfd.readouterr()
        with pytest.raises(CheckpointDamaged) as damage:
            Checkpoints(workdir / "checkpoints").verify(20)
        assert damage.value.step == 20 and damage.value.file == file, (file, how, str(damage.value))
        # load: the newest intact checkpoint, saying which
        _, model, _, _ = train.load_model(workdir)
        _assert_same_params(model, intact)
        err = capfd.readouterr().err
        assert f"checkpoint step 20 is damaged ({file}:" in err and "newest intact checkpoint instead: step 10" in err
        # load of the damaged step itself: refused, with the choice spelled out
        with pytest.raises(CheckpointDamaged, match=r"choose another step .*: the intact one\(s\): \[10\]"):
            train.load_model(workdir, step=20)


def test_resuming_past_a_damaged_checkpoint_sets_it_aside_and_ends_bitwise_equal(trained_20, tmp_path, capfd):
    workdir = tmp_path / "run"
    shutil.copytree(trained_20, workdir)
    data = [f for f in _checkpoint_files(workdir, 20) if "/d/" in f]
    _flip_byte(workdir / "checkpoints" / "20" / data[0])
    resumed = _fit(workdir, steps=20)  # redoes steps 10 -> 20
    err = capfd.readouterr().err
    assert "checkpoint step 20 is damaged" in err and "moved it aside" in err and "from step 10" in err
    assert (workdir / "checkpoints" / "damaged-20").is_dir()
    assert Checkpoints(workdir / "checkpoints").verify(20)
    _, original, _, _ = train.load_model(trained_20)
    _assert_same_params(resumed.model, original)


def test_when_no_checkpoint_is_intact_the_user_is_told_what_to_do(trained_20, tmp_path, capfd):
    workdir = tmp_path / "run"
    shutil.copytree(trained_20, workdir)
    for step in (10, 20):
        _flip_byte(workdir / "checkpoints" / str(step) / "default" / "_METADATA")
    capfd.readouterr()
    assert cli.main(["eval", "--workdir", str(workdir)]) == 2
    err = capfd.readouterr().err
    assert "no intact checkpoint is left" in err and "Traceback" not in err


# ----------------------------------------------------------------------------- hand-edited work directory files


def _edit_json(path: Path, **changes):
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


BAD_FILES = {  # case: (damage, what `eval` says, what `train` says; None: resuming without the file is fine)
    "config value of the wrong type": (lambda w: _edit_json(w / "config.json", lr="fast"),
                                       "config.json: config key 'lr' must be float, got \"fast\"", ...),
    "config int given a float": (lambda w: _edit_json(w / "config.json", steps=2.5),
                                 "config.json: config key 'steps' must be int, got 2.5", ...),
    "unknown config key": (lambda w: _edit_json(w / "config.json", lerning_rate=0.1),
                           "config.json: unknown config key 'lerning_rate' for ToyConfig", ...),
    "config not JSON": (lambda w: (w / "config.json").write_text("{lr: 0.1"), "config.json is not valid JSON", ...),
    "config missing": (lambda w: (w / "config.json").unlink(), "config.json is missing", ...),
    "run.json wrong type": (lambda w: (w / "run.json").write_text('{"model": 3}'),
                            "run.json: key 'model' must be a string", ...),
    "run.json unknown key": (lambda w: _edit_json(w / "run.json", owner="me"), "run.json: unknown key 'owner'", ...),
    "run.json missing": (lambda w: (w / "run.json").unlink(), "is not a minimodal work directory", None),
    "unknown model": (lambda w: _edit_json(w / "run.json", model="toy2"), "unknown model 'toy2'",
                      "holds a 'toy2' run, not 'toy'"),
    "tokenizer missing": (lambda w: (w / "tokenizer.json").unlink(), "tokenizer.json is missing", ...),
    "tokenizer garbled": (lambda w: (w / "tokenizer.json").write_text("[1, 2"), "is not a minimodal tokenizer file",
                          ...),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_bad_workdir_file_is_one_clear_line_and_exit_code_2(case, trained_20, tmp_path, capfd):
    workdir = tmp_path / "run"
    shutil.copytree(trained_20, workdir)
    damage, eval_message, train_message = BAD_FILES[case]
    damage(workdir)
    capfd.readouterr()
    commands = {"eval": (["eval", "--workdir", str(workdir)], eval_message),
                "train": (["train", "toy", "--workdir", str(workdir), "--quiet", "steps=30"],
                          eval_message if train_message is ... else train_message)}
    for argv, message in commands.values():
        if message is None:
            continue
        assert cli.main(argv) == 2, argv
        err = capfd.readouterr().err
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and message in lines[0] and "Traceback" not in err, (argv, err)


def test_training_refuses_a_workdir_whose_tokenizer_is_garbled(trained_20, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(trained_20, workdir)
    (workdir / "tokenizer.json").write_text("[1, 2")
    with pytest.raises(WorkdirError, match="tokenizer.json is not a minimodal tokenizer file"):
        _fit(workdir, steps=30)


# ----------------------------------------------------------------------------- options at the boundary


def test_sampling_options_are_checked_by_name_type_and_range():
    from minimodal import dalle, ddpm

    with pytest.raises(ValueError, match=r"unknown option 'temprature' .* valid options: prompts, seed, "
                                         r"temperature, top_k"):
        dalle.Pipeline.generate(None, ["a red circle"], temprature=0.5)
    with pytest.raises(ValueError, match=r"option 'top_k' must be int \| None, got 'many'"):
        dalle.Pipeline.generate(None, ["a red circle"], top_k="many")
    with pytest.raises(ValueError, match="top_k must be >= 0"):
        dalle.Pipeline.generate(None, ["a red circle"], top_k=-1)
    with pytest.raises(ValueError, match="unknown option 'step' .* valid options: .*steps"):
        ddpm.Pipeline.generate(None, ["a red circle"], step=5)
    with pytest.raises(ValueError, match="option 'guidance' must be float | None, got 'high'"):
        ddpm.Pipeline.generate(None, ["a red circle"], guidance="high")
    stub = types.SimpleNamespace(model=types.SimpleNamespace(config=ddpm.Config()), tokenizer=None)
    for option, message in [({"steps": 0}, r"steps must be in \[1, "), ({"eta": 2.0}, r"eta must be in \[0, 1\]"),
                            ({"guidance": -1.0}, "guidance must be >= 0")]:
        with pytest.raises(ValueError, match=message):
            ddpm.Pipeline.generate(stub, ["a red circle"], **option)


@pytest.mark.parametrize("argv, message", [
    (["sample", "--workdir", "{d}", "--prompt", "a red circle", "seed=3"], "use --seed"),
    (["sample", "--workdir", "{d}", "--prompt", "a red circle", "-n", "0"], "-n (images per prompt) must be"),
    (["sample", "--workdir", "{d}", "--prompt", " "], "--prompt must not be empty"),
    (["eval", "--workdir", "{d}", "lr=-1"], "lr and grad_clip must be positive"),
    (["eval", "--workdir", "{d}", "temprature=1"], "unknown config key 'temprature'"),
    (["eval", "--workdir", "{d}", "--step", "7"], "has no checkpoint at step 7; it has [10, 20]"),
    (["search", "a red circle", "--workdir", "{d}", "--images", "shapes", "-k", "0"], "k (the number of matches)"),
])
def test_cli_options_are_checked_at_the_boundary(argv, message, trained_20, capfd, monkeypatch):
    import minimodal

    if argv[0] == "search":  # any pipeline will do: the check comes before the images are embedded
        monkeypatch.setattr(minimodal, "load", lambda workdir: None)
    capfd.readouterr()
    assert cli.main([a.format(d=trained_20) for a in argv]) == 2
    err = capfd.readouterr().err
    assert message in err and "Traceback" not in err


# ----------------------------------------------------------------------------- one training per directory


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_second_training_on_the_same_workdir_refuses_at_once(tmp_path, capfd):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        tmp_path.mkdir(exist_ok=True)
        (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(),
                                                      "started": "2026-12-02 10:00:00"}))
        with pytest.raises(WorkdirBusy, match=rf"in use by another training \(pid {holder.pid} on "):
            _fit(tmp_path, steps=5)
        assert not (tmp_path / "checkpoints").exists()  # refused before any work
        assert cli.main(["train", "toy", "--workdir", str(tmp_path), "--quiet", "--data", "shapes",
                         "image_size=16", "n_train=64", "classes=24"]) == 2
        assert "in use by another training" in capfd.readouterr().err
    finally:
        holder.kill()
        holder.wait()


def test_a_stale_lock_is_taken_over_saying_so_and_a_foreign_host_is_respected(tmp_path):
    said = []
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname()}))
    with TrainingLock(tmp_path, say=said.append):
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert "stale lock" in said[0] and not (tmp_path / LOCK_FILE).exists()
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "node-7", "started": "yesterday"}))
    with pytest.raises(WorkdirBusy, match=r"locked by a training on host node-7 .* delete .*train.lock"):
        with TrainingLock(tmp_path):
            pass


# ----------------------------------------------------------------------------- full disk, read-only disk


@contextlib.contextmanager
def _small_filesystem(path: Path, size: str = "4m"):
    """A tmpfs of `size` at `path` (needs root and CAP_SYS_ADMIN; the test is skipped without them)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs root with mount rights for a small tmpfs (full / read-only disk)")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


# Orbax's writer threads still report the failed write after its event loop has closed: noise, not a fault.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_full_disk_is_a_clear_error_and_the_last_checkpoint_stays_intact(tmp_path):
    with _small_filesystem(tmp_path / "disk") as disk:
        workdir = disk / "run"
        _fit(workdir, steps=10)
        stat = os.statvfs(disk)
        filler = disk / "filler"
        with filler.open("wb") as f:  # leave two pages: enough for the metrics lines, not for a checkpoint
            f.write(b"\0" * max(stat.f_bavail * stat.f_frsize - 2 * 4096, 0))
        with pytest.raises(CheckpointWriteError, match=r"could not write checkpoint step 20 .*No space left on "
                                                       r"device.*the last checkpoint \(step 10\) is intact"):
            _fit(workdir, steps=20)
        assert Checkpoints(workdir / "checkpoints").steps() == [10]
        assert Checkpoints(workdir / "checkpoints").verify(10)
        assert not list((workdir / "checkpoints").glob(".partial-*"))
        filler.unlink()
        resumed = _fit(workdir, steps=20)
    _fit(tmp_path / "straight", steps=10)
    _assert_same_params(resumed.model, _fit(tmp_path / "straight", steps=20).model)


def test_a_read_only_workdir_refuses_training_clearly_but_still_loads(tmp_path, capfd):
    with _small_filesystem(tmp_path / "disk") as disk:
        workdir = disk / "run"
        trained = _fit(workdir, steps=10)
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        capfd.readouterr()
        assert cli.main(["train", "toy", "--workdir", str(workdir), "--quiet", "steps=20"]) == 2
        err = capfd.readouterr().err
        assert "cannot write to the work directory" in err and "Read-only file system" in err
        assert len(err.strip().splitlines()) == 1
        _, model, _, _ = train.load_model(workdir)  # reading needs no write access
        _assert_same_params(model, trained.model)


# ----------------------------------------------------------------------------- several processes

TOY = ["--data", "shapes", "--quiet", "image_size=16", "n_train=64", "classes=24", "batch_size=16", "log_every=2",
       "checkpoint_every=4", "lr=0.01"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _train(script: Path, workdir: Path, processes: int, *extra: str) -> list[subprocess.CompletedProcess]:
    """`minimodal train toy` as `processes` local processes sharing 8 CPU devices."""
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={8 // processes}"}
    argv = [sys.executable, str(script), "train", "toy", "--workdir", str(workdir), *TOY]
    if processes == 1:
        return [subprocess.run([*argv, *extra], env=env, capture_output=True, text=True, timeout=300)]
    port = _free_port()
    runs = [subprocess.Popen([*argv, *(extra[i] if isinstance(extra[0], tuple) else extra),
                              "--coordinator", f"localhost:{port}", "--num-processes", str(processes),
                              "--process-id", str(i)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for i in range(processes)]
    results = []
    for i, run in enumerate(runs):
        out, err = run.communicate(timeout=300)
        results.append(subprocess.CompletedProcess(run.args, run.returncode, out, err))
    return results


def _losses(workdir: Path) -> list[float]:
    return [r["loss"] for r in train.read_metrics(workdir)]


def test_two_processes_train_the_same_run_as_one_and_either_layout_resumes(tmp_path):
    script = cli_script(tmp_path / "minimodal_toy.py")
    ok = lambda results: all(r.returncode == 0 for r in results) or pytest.fail(  # noqa: E731
        "\n".join(r.stderr[-1500:] for r in results))
    ok(_train(script, tmp_path / "one", 1, "steps=12"))
    ok(_train(script, tmp_path / "two", 2, "steps=12"))
    one, two = train.read_metrics(tmp_path / "one"), train.read_metrics(tmp_path / "two")
    assert [r["step"] for r in two] == list(range(2, 13, 2))  # process 0 alone writes the metrics
    np.testing.assert_allclose(_losses(tmp_path / "two"), _losses(tmp_path / "one"), rtol=1e-5)
    assert len(one) == len(two)
    # a checkpoint written by 2 processes resumes in 1, and the other way round
    ok(_train(script, tmp_path / "two", 1, "steps=16"))
    ok(_train(script, tmp_path / "one", 2, "steps=16"))
    np.testing.assert_allclose(_losses(tmp_path / "two"), _losses(tmp_path / "one"), rtol=1e-5)
    _, from_two, _, _ = train.load_model(tmp_path / "two")
    _, from_one, _, _ = train.load_model(tmp_path / "one")
    for a, b in zip(_params(from_two), _params(from_one)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_processes_started_with_different_settings_are_refused_by_name(tmp_path):
    script = cli_script(tmp_path / "minimodal_toy.py")
    results = _train(script, tmp_path / "run", 2, ("steps=4",), ("steps=4", "lr=0.02"))
    for r in results:
        assert r.returncode == 2, r.stderr[-1500:]
        assert "different settings (lr differ between process 0 and process(es) [1])" in r.stderr
        assert "Traceback" not in r.stderr


@pytest.mark.parametrize("argv, message", [
    (["--coordinator", "localhost:1234"], "go together"),
    (["--coordinator", "nohost", "--num-processes", "2", "--process-id", "0"], "must be HOST:PORT"),
    (["--coordinator", "h:1", "--num-processes", "2", "--process-id", "2"], "--process-id must be in [0, 2)"),
])
def test_distributed_flags_are_checked(argv, message, tmp_path, capsys):
    assert cli.main(["train", "toy", "--workdir", str(tmp_path), *argv]) == 2
    assert message in capsys.readouterr().err
