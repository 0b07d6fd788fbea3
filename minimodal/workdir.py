"""A work directory's own files, read strictly, and the lock that keeps two trainings out of one directory.

    run.json        {"model": NAME}                  which model family made the directory
    config.json     the family's Config as JSON       (validated by `minimodal.config.load`)
    tokenizer.json  the BPE tokenizer                 (validated by `Tokenizer.load`)
    train.lock      {"pid", "host", "started"}        present while a training runs in the directory

A bad file is a `WorkdirError` naming the file and the key; the CLI prints it as one line (exit code 2).
"""

from __future__ import annotations

import errno
import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Callable

RUN_FILE, CONFIG_FILE, TOKENIZER_FILE, METRICS_FILE, LOCK_FILE = (
    "run.json", "config.json", "tokenizer.json", "metrics.jsonl", "train.lock")


class WorkdirError(ValueError):
    """A work directory file is missing, unreadable or holds a value of the wrong type."""


class WorkdirBusy(WorkdirError):
    """Another live training holds the work directory's lock."""


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WorkdirError(f"{path} is missing ({what})") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise WorkdirError(f"{path} is not valid JSON ({error}); restore it from a copy or re-create the "
                           "work directory") from None


def model_name(workdir: str | Path) -> str | None:
    """The model family a work directory was made by (its run.json), or None for a directory without one."""
    path = Path(workdir) / RUN_FILE
    if not path.exists():
        return None
    run = _read_json(path, "the model's name")
    if not isinstance(run, dict) or not isinstance(run.get("model"), str):
        raise WorkdirError(f"{path}: key 'model' must be a string naming the model family, e.g. "
                           '{"model": "clip"}')
    unknown = sorted(set(run) - {"model"})
    if unknown:
        raise WorkdirError(f"{path}: unknown key {unknown[0]!r} (run.json holds only 'model')")
    return run["model"]


def read_tokenizer(workdir: str | Path):
    from minimodal.tokenizer import Tokenizer

    path = Path(workdir) / TOKENIZER_FILE
    if not path.exists():
        raise WorkdirError(f"{path} is missing (the tokenizer this model was trained with); without it the "
                           "model's token ids mean nothing: restore it from a copy of the work directory")
    try:
        return Tokenizer.load(path)
    except ValueError as error:
        raise WorkdirError(str(error)) from None


# ----------------------------------------------------------------------------- the training lock


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class TrainingLock:
    """`train.lock` in a work directory: created exclusively, holding the holder's pid and host.

    A second training on the same directory refuses at once, naming the holder. A lock left by a process
    that died (same host, pid gone: SIGKILL, power loss) is taken over, saying so. Released on exit.
    """

    def __init__(self, workdir: str | Path, say: Callable[[str], None] = print):
        self.path, self.say, self.held = Path(workdir) / LOCK_FILE, say, False

    def __enter__(self) -> TrainingLock:
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            except OSError as error:
                raise WorkdirError(f"cannot write to the work directory {self.path.parent} ({error.strerror}): "
                                   "training writes its checkpoints there; make it writable or choose another "
                                   "--workdir") from None
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            return self
        raise WorkdirBusy(f"could not take the lock {self.path}")

    def _take_over_if_stale(self) -> None:
        try:
            holder = json.loads(self.path.read_text())
            pid, host = int(holder["pid"]), str(holder["host"])
        except FileNotFoundError:
            return  # released meanwhile: try again
        except (ValueError, KeyError, TypeError):
            self.say(f"{self.path} is unreadable (a crash while writing it?); taking it over")
            self.path.unlink(missing_ok=True)
            return
        if host != socket.gethostname():
            raise WorkdirBusy(f"{self.path.parent} is locked by a training on host {host} (pid {pid}, since "
                              f"{holder.get('started', '?')}); wait for it, or delete {self.path} if you "
                              "are sure it is no longer running")
        if _alive(pid) and pid != os.getpid():
            raise WorkdirBusy(f"{self.path.parent} is in use by another training (pid {pid} on {host}, since "
                              f"{holder.get('started', '?')}); wait for it to finish or stop it, or choose "
                              "another --workdir")
        self.say(f"taking over the stale lock of a training that is no longer running (pid {pid} on {host})")
        self.path.unlink(missing_ok=True)

    def __exit__(self, *_) -> None:
        if self.held:
            try:
                self.path.unlink(missing_ok=True)
            except OSError as error:  # a read-only directory now: the next run takes the lock over
                if error.errno not in (errno.EROFS, errno.EACCES):
                    raise
            self.held = False
