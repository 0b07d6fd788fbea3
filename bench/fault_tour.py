"""What a user sees when things go wrong: each fault injected into a real work directory (a tiny DDPM),
then the CLI command a user would run next; prints a markdown table (exit code, stderr lines, last line).

    python bench/fault_tour.py                      # this checkout
    python bench/fault_tour.py --code /tmp/old      # another checkout's minimodal (e.g. a git worktree)

Needs root for the full-disk and read-only cases (a small tmpfs); they are skipped otherwise.
Results: bench/results/faults.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TINY = ["--preset", "tiny", "--data", "shapes", "--quiet"]


# `python -m minimodal` from the checkout `code`, ahead of the editable install's own import hook.
LAUNCH = ("import runpy, sys; sys.path.insert(0, sys.argv.pop(1)); "
          "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]; "
          "runpy.run_module('minimodal', run_name='__main__', alter_sys=True)")


def minimodal(code: Path, *args: str, background: bool = False):
    env = dict(os.environ)
    argv = [sys.executable, "-c", LAUNCH, str(code), *args]
    if background:
        return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)


def checkpoint_dirs(workdir: Path) -> list[Path]:
    return sorted((p for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


def data_file(workdir: Path) -> Path:
    """The largest file of the newest checkpoint (an array's data)."""
    return max((p for p in checkpoint_dirs(workdir)[-1].rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))


def edit_config(workdir: Path, **changes) -> None:
    config = json.loads((workdir / "config.json").read_text())
    config.update(changes)
    (workdir / "config.json").write_text(json.dumps(config))


def mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                                                 capture_output=True).returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--code", type=Path, default=Path(__file__).resolve().parent.parent)
    code = parser.parse_args().code.resolve()
    tmp = Path(tempfile.mkdtemp(prefix="faults-"))
    base = tmp / "base"
    trained = minimodal(code, "train", "ddpm", "--workdir", str(base), *TINY)
    assert trained.returncode == 0, trained.stderr[-2000:]
    rows = []

    def case(name: str, fault, *command: str, workdir: Path | None = None):
        w = workdir or tmp / name.replace(" ", "_")
        if workdir is None:
            shutil.copytree(base, w)
        fault(w)
        result = minimodal(code, *[a.format(w=w) for a in command])
        lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("[Gloo]")]
        last = (lines[-1] if lines else "").replace("|", "\\|")[:160]
        rows.append(f"| {name} | `minimodal {command[0]} ...` | {result.returncode} | {len(lines)} | {last} |")

    eval_ = ("eval", "--workdir", "{w}")
    resume = ("train", "ddpm", "--workdir", "{w}", "--quiet", "steps=30")
    case("flipped byte in the newest checkpoint", lambda w: flip_byte(data_file(w)), *eval_)
    case("flipped byte, then resume", lambda w: flip_byte(data_file(w)), *resume)
    case("half-copied newest checkpoint (a file missing)", lambda w: data_file(w).unlink(), *eval_)
    case("config.json: a value of the wrong type", lambda w: edit_config(w, lr="fast"), *eval_)
    case("config.json: an unknown key", lambda w: edit_config(w, lerning_rate=0.1), *eval_)
    case("tokenizer.json missing", lambda w: (w / "tokenizer.json").unlink(), *eval_)
    case("unknown sampling option", lambda w: None, "sample", "--workdir", "{w}", "--prompt", "a red circle",
         "temprature=0.5")
    case("sampling option of the wrong type", lambda w: None, "sample", "ddpm", "--workdir", "{w}", "--prompt",
         "a red circle", "steps=many")

    busy = tmp / "busy"
    first = minimodal(code, "train", "ddpm", "--workdir", str(busy), *TINY, "steps=100000", background=True)
    time.sleep(30)  # well into its training
    case("a second training on a busy work directory", lambda w: None, "train", "ddpm", "--workdir", "{w}", *TINY,
         "steps=40", workdir=busy)
    first.send_signal(signal.SIGKILL)
    first.wait()
    case("resuming after the first one was SIGKILLed", lambda w: None, *resume[:3], "{w}", "--quiet",
         "steps=30", workdir=busy)

    disk = tmp / "disk"
    if mount_tmpfs(disk, "32m"):
        try:
            def fill(w):
                shutil.copytree(base, w)
                stat = os.statvfs(disk)
                (disk / "filler").write_bytes(b"\0" * max(stat.f_bavail * stat.f_frsize - 2 * 4096, 0))
            case("disk full during training", fill, *resume, workdir=disk / "run")
            (disk / "filler").unlink()
            subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
            case("read-only work directory: train", lambda w: None, *resume, workdir=disk / "run")
            case("read-only work directory: eval", lambda w: None, *eval_, workdir=disk / "run")
        finally:
            subprocess.run(["umount", "-l", str(disk)], capture_output=True)
    print(f"code: {code}\n")
    print("| fault | command | exit | stderr lines | last line |\n| --- | --- | --- | --- | --- |")
    print("\n".join(rows))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
