"""Checkpoints you can trust: written atomically, verified before use, never lost to a crash or a bad byte.

A checkpoint is a directory `checkpoints/<step>/` holding Orbax's files for the training state (`default/`)
and `manifest.json`: the size and SHA-256 of every one of those files, plus the SHA-256 of that list.

- Saving writes everything into `checkpoints/.partial-<step>/` and renames it to `<step>/` only when it is
  complete (a rename within a file system is atomic), so a process killed at any instant leaves the
  previous checkpoints untouched and at most a `.partial-*` folder, which the next save clears away.
- Restoring re-hashes the files first. A damaged checkpoint is named (step and file), and the newest intact
  one is used instead; when resuming, the damaged one is moved aside to `checkpoints/damaged-<step>/`.
- A failed write (disk full, read-only directory) removes its partial folder and says which checkpoint is
  still intact.

Several processes (`jax.distributed`): every process writes its part through Orbax; process 0 alone writes
the manifest, publishes and prunes, between barriers.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import jax
import orbax.checkpoint as ocp

from minimodal.distributed import barrier

MANIFEST, STATE_ITEM, PARTIAL, DAMAGED = "manifest.json", "default", ".partial-", "damaged-"


class CheckpointDamaged(ValueError):
    """A checkpoint's files do not match its manifest (or cannot be read back)."""

    def __init__(self, step: int, file: str, why: str):
        super().__init__(f"checkpoint step {step} is damaged ({file}: {why})")
        self.step, self.file, self.why = step, file, why


class CheckpointWriteError(OSError):
    """A checkpoint could not be written; the previous checkpoints are intact."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _remove_for_good(path: Path, patience: float = 5.0) -> None:
    """Delete `path` and keep deleting it while a failed save's writer threads, still finishing, put files back:
    done once it has stayed absent for 0.2 s (or after `patience` seconds; the next save clears what is left)."""
    deadline, absent_since = time.monotonic() + patience, None
    while time.monotonic() < deadline:
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)
            absent_since = None
        elif absent_since is None:
            absent_since = time.monotonic()
        elif time.monotonic() - absent_since >= 0.2:
            return
        time.sleep(0.02)


def _listing_digest(files: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


class Checkpoints:
    """The checkpoints of one work directory: `steps()`, `save(step, state)`, `restore_newest(target)`."""

    def __init__(self, directory: str | Path, keep: int = 2, say: Callable[[str], None] = print):
        self.directory, self.keep, self.say = Path(directory).absolute(), max(keep, 1), say
        self._orbax = ocp.Checkpointer(ocp.StandardCheckpointHandler())

    # ------------------------------------------------------------------ listing

    def steps(self) -> list[int]:
        """Steps of the published checkpoints (intact or not), oldest first."""
        if not self.directory.is_dir():
            return []
        return sorted(int(p.name) for p in self.directory.iterdir() if p.name.isdigit() and p.is_dir())

    def latest_step(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    # ------------------------------------------------------------------ saving

    def save(self, step: int, state: Any) -> None:
        """Write `state` as checkpoint `step` atomically, then keep only the newest `keep` checkpoints."""
        partial = self.directory / f"{PARTIAL}{step}"
        primary = jax.process_index() == 0
        try:
            if primary:
                self.directory.mkdir(parents=True, exist_ok=True)
                self._clear_partials()
            barrier(f"minimodal_ckpt_begin_{step}")
            self._write_state(partial / STATE_ITEM, state)
            barrier(f"minimodal_ckpt_written_{step}")
            if primary:
                self._write_manifest(partial, step)
                self._publish(partial, self.directory / str(step))
                self._prune()
        except OSError as error:  # disk full, read-only, quota: say what is still there
            if primary:
                _remove_for_good(partial)
            intact = [s for s in self.steps() if s != step]
            kept = f"the last checkpoint (step {intact[-1]}) is intact" if intact else "no earlier checkpoint exists"
            raise CheckpointWriteError(
                f"could not write checkpoint step {step} to {self.directory}: {error.strerror or error}; {kept}. "
                "Free some space (or make the directory writable) and run the same command again to resume"
            ) from None
        barrier(f"minimodal_ckpt_done_{step}")

    def _write_state(self, path: Path, state: Any) -> None:
        failure = None
        absl = logging.getLogger("absl")
        level = absl.level
        absl.setLevel(logging.CRITICAL)  # Orbax logs each failing writer thread; the error raised says it once
        with _stderr_held() as held:  # its threads also print tracebacks (thousands of lines) straight to fd 2
            try:
                self._orbax.save(path, args=ocp.args.StandardSave(state))
            except Exception as error:  # Orbax/TensorStore wrap I/O failures in their own errors
                failure = error if isinstance(error, OSError) else _os_error(error)
        if failure is not None:
            raise failure  # (the level stays raised and the held output is dropped: both repeat this failure)
        absl.setLevel(level)
        held_text = held.getvalue()
        if held_text:
            sys.stderr.write(held_text)

    def _write_manifest(self, folder: Path, step: int) -> None:
        files = {str(p.relative_to(folder)): {"bytes": p.stat().st_size, "sha256": _sha256(p)}
                 for p in sorted(folder.rglob("*")) if p.is_file()}
        manifest = {"step": step, "files": files, "digest": _listing_digest(files)}
        path = folder / MANIFEST
        with path.open("w") as f:
            json.dump(manifest, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())

    def _publish(self, partial: Path, final: Path) -> None:
        if final.exists():  # a stale checkpoint of the same step (e.g. a resumed run re-reaching it)
            shutil.rmtree(final)
        os.rename(partial, final)
        _fsync_directory(self.directory)

    def _prune(self) -> None:
        for step in self.steps()[:-self.keep]:
            shutil.rmtree(self.directory / str(step), ignore_errors=True)

    def _clear_partials(self) -> None:
        for path in self.directory.glob(f"{PARTIAL}*"):
            shutil.rmtree(path, ignore_errors=True)

    # ------------------------------------------------------------------ verifying and restoring

    def verify(self, step: int) -> bool:
        """Check checkpoint `step` against its manifest; raise `CheckpointDamaged` naming the bad file.
        Returns False for a checkpoint written before manifests existed (nothing to check against)."""
        folder = self.directory / str(step)
        path = folder / MANIFEST
        if not path.exists():
            if (folder / STATE_ITEM).is_dir():
                return False  # an older minimodal's checkpoint: restored unverified
            raise CheckpointDamaged(step, MANIFEST, "missing")
        try:
            manifest = json.loads(path.read_text())
            files = manifest["files"]
            assert manifest["digest"] == _listing_digest(files) and manifest["step"] == step
        except (ValueError, KeyError, TypeError, AssertionError, UnicodeDecodeError):
            raise CheckpointDamaged(step, MANIFEST, "unreadable or altered") from None
        for name, expected in files.items():
            file = folder / name
            if not file.is_file():
                raise CheckpointDamaged(step, name, "missing")
            if file.stat().st_size != expected["bytes"]:
                raise CheckpointDamaged(step, name, f"{file.stat().st_size} bytes, expected {expected['bytes']}")
            if _sha256(file) != expected["sha256"]:
                raise CheckpointDamaged(step, name, "contents changed (checksum mismatch)")
        return True

    def restore(self, step: int, target: Any) -> Any:
        """Checkpoint `step`, verified, restored with the shapes, dtypes and shardings of `target`."""
        self.verify(step)
        try:
            return self._orbax.restore(self.directory / str(step) / STATE_ITEM, args=ocp.args.StandardRestore(target))
        except Exception as error:  # unverifiable (old) checkpoints fail here instead
            raise CheckpointDamaged(step, STATE_ITEM, _first_line(error)) from None

    def restore_newest(self, target: Any, *, set_damaged_aside: bool) -> tuple[int, Any]:
        """(step, state) of the newest intact checkpoint, saying which damaged ones were skipped; (0, None)
        when there are none at all. With `set_damaged_aside`, damaged ones move to `damaged-<step>/`.
        Raises `CheckpointDamaged` when checkpoints exist but none is intact."""
        damaged: list[CheckpointDamaged] = []
        for step in reversed(self.steps()):
            try:
                state = self.restore(step, target)
            except CheckpointDamaged as damage:
                damaged.append(damage)
                self.say(f"{damage} in {self.directory}")
                if set_damaged_aside and jax.process_index() == 0:
                    aside = self.directory / f"{DAMAGED}{step}"
                    shutil.rmtree(aside, ignore_errors=True)
                    os.rename(self.directory / str(step), aside)
                    self.say(f"moved it aside to {aside}")
                continue
            if damaged:
                self.say(f"using the newest intact checkpoint instead: step {step}")
            return step, state
        if damaged:
            raise CheckpointDamaged(damaged[0].step, damaged[0].file,
                                    f"{damaged[0].why}; no intact checkpoint is left in {self.directory} "
                                    "(move that folder away to start the run afresh)")
        return 0, None


@contextlib.contextmanager
def _stderr_held():
    """What is written to file descriptor 2 meanwhile, held back (yields an object with `getvalue()`)."""
    class Held:
        text = ""

        def getvalue(self) -> str:
            return self.text

    held = Held()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield held
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            held.text = sink.read().decode(errors="replace")


def _os_error(error: BaseException) -> OSError:
    """The operating-system error inside a wrapped one (e.g. TensorStore's RESOURCE_EXHAUSTED), if any."""
    text = str(error)
    for code in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EIO):
        if os.strerror(code) in text:
            return OSError(code, os.strerror(code))
    return OSError(_first_line(error))


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:300] if text else type(error).__name__


def _fsync_directory(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
