"""Configs: one frozen dataclass per model family, overridable from the command line as key=value.

Every family's `Config` subclasses `TrainConfig`, so every model accepts the same training keys
(`steps=`, `batch_size=`, `lr=`, `seed=`, `image_size=`, `checkpoint_every=`, ...).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import numbers
import os
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, Sequence, TypeVar

C = TypeVar("C")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """What the one training loop needs; model families add their own fields."""

    # data
    data: str = "shapes"  # a source of minimodal.data.SOURCES
    n_train: int = 20_000  # examples drawn from the source for training
    image_size: int = 32
    context_length: int = 24  # text tokens per caption, BOS and EOS included
    vocab_size: int = 384  # upper bound of the BPE vocabulary (training stops early when nothing is left to merge)
    # optimisation (AdamW, linear warm-up then cosine decay, global-norm clipping)
    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    ema_decay: float = 0.0  # 0 = no EMA of the weights
    micro_batches: int = 1  # > 1: each step's gradient is the mean of this many slices' gradients, in turn
    seed: int = 0
    # bookkeeping
    log_every: int = 50
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    eval_every: int = 0  # 0 = no evaluation during training (`minimodal eval` runs it)
    sample_every: int = 0  # 0 = one sample grid at the end only

    # A family's sampling and evaluation defaults: they do not touch training, so a resumed run may change them.
    sampling_keys: ClassVar[frozenset[str]] = frozenset()


# Keys that may change between a run and its resumption; any other change is an incompatible config.
RESUMABLE_KEYS = frozenset(
    {"steps", "log_every", "checkpoint_every", "keep_checkpoints", "eval_every", "sample_every", "micro_batches"}
)


def _parse_value(text: str, annotation: Any, key: str) -> Any:
    """Parse one command-line value by the field's type (int, float, str, bool or tuple[int, ...])."""
    kind = typing.get_origin(annotation) or annotation
    try:
        if kind is bool:
            if text.lower() not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                raise ValueError(text)
            return text.lower() in ("1", "true", "yes", "on")
        if kind is int:
            try:
                return int(text)
            except ValueError:  # "1e4"
                value = float(text)
                if value != int(value):
                    raise ValueError(text) from None
                return int(value)
        if kind is tuple:
            return tuple(int(v) for v in text.strip("()").split(",") if v.strip())
        return kind(text)
    except (ValueError, OverflowError):
        raise ValueError(f"config key {key!r} expects {getattr(kind, '__name__', kind)}, got {text!r}") from None


def override(config: C, assignments: Sequence[str] | dict[str, Any]) -> C:
    """Return `config` with `key=value` assignments applied; unknown keys are a clear error."""
    fields = {f.name: f for f in dataclasses.fields(config)}
    hints = typing.get_type_hints(type(config))
    changes: dict[str, Any] = {}
    items = assignments.items() if isinstance(assignments, dict) else [
        _split_assignment(a) for a in assignments]
    for key, value in items:
        if key not in fields:
            raise ValueError(
                f"unknown config key {key!r} for {type(config).__module__}.{type(config).__name__}; "
                f"valid keys: {', '.join(sorted(fields))}")
        changes[key] = _parse_value(value, hints[key], key) if isinstance(value, str) else value
    return dataclasses.replace(config, **changes)


def _split_assignment(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise ValueError(f"expected key=value, got {text!r}")
    key, value = text.split("=", 1)
    return key.strip(), value.strip()


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def write_atomically(path: str | Path, text: str) -> None:
    """Write a small file so that a crash leaves the old contents or the new, never half of them."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def save(config: Any, path: str | Path) -> None:
    write_atomically(path, json.dumps(to_dict(config), indent=2, sort_keys=True) + "\n")


class ConfigFileError(ValueError):
    """A config file is missing, is not JSON, or holds an unknown key or a value of the wrong type."""


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _has_type(value: Any, annotation: Any) -> bool:
    """Whether a JSON value fits a field's annotation (int, float, str, bool, tuple[int, ...], X | None)."""
    if annotation is Any:
        return True
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_has_type(value, a) for a in args)
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if origin is tuple:
        return isinstance(value, list) and all(_has_type(v, args[0]) for v in value)
    return isinstance(value, annotation) if isinstance(annotation, type) else True


def checked_options(method):
    """Check a pipeline method's keyword options at the boundary, before any work: an unknown name is an
    error listing the valid ones, a value of the wrong type one naming the option and the type it needs.
    (Ranges are the method's own checks.)"""
    signature = inspect.signature(method)
    valid = [n for n, p in signature.parameters.items() if n != "self" and p.kind is not p.VAR_POSITIONAL]

    @functools.wraps(method)
    def checked(*args, **options):
        hints = typing.get_type_hints(method)
        for name, value in options.items():
            if name not in signature.parameters:
                raise ValueError(f"unknown option {name!r} for {method.__qualname__}; valid options: "
                                 f"{', '.join(valid)}")
            if name in hints and not _has_type(value, hints[name]):
                raise ValueError(f"option {name!r} must be {_type_name(hints[name])}, got {value!r}")
        return method(*args, **options)

    return checked


def load(cls: type[C], path: str | Path) -> C:
    """A config from its JSON file. An unknown key or a value of the wrong type is a `ConfigFileError`
    naming the file and the key; keys the file lacks take the defaults (files of older versions)."""
    path = Path(path)
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigFileError(f"{path} is missing (the {cls.__name__} the model was trained with)") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise ConfigFileError(f"{path} is not valid JSON ({error})") from None
    if not isinstance(values, dict):
        raise ConfigFileError(f"{path} must hold a JSON object of config keys, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    for key, value in values.items():
        if key not in fields:
            raise ConfigFileError(f"{path}: unknown config key {key!r} for {cls.__name__}; remove it or fix its "
                                  f"spelling (valid keys: {', '.join(sorted(fields))})")
        if not _has_type(value, hints[key]):
            raise ConfigFileError(f"{path}: config key {key!r} must be {_type_name(hints[key])}, "
                                  f"got {json.dumps(value)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else float(v) if hints[k] is float else v
                  for k, v in values.items()})


def check_training_values(config: TrainConfig) -> None:
    """Reject values the training loop cannot run with, naming the key."""
    positive = ("steps", "batch_size", "n_train", "image_size", "context_length", "vocab_size", "log_every",
                "checkpoint_every", "keep_checkpoints", "micro_batches")
    for key in positive:
        if getattr(config, key) < 1:
            raise ValueError(f"config key {key!r} must be at least 1, got {getattr(config, key)}")
    for key in ("warmup_steps", "weight_decay", "eval_every", "sample_every"):
        if getattr(config, key) < 0:
            raise ValueError(f"config key {key!r} must not be negative, got {getattr(config, key)}")
    if not config.lr > 0 or not config.grad_clip > 0:
        raise ValueError(f"lr and grad_clip must be positive, got lr={config.lr}, grad_clip={config.grad_clip}")
    if not 0 <= config.ema_decay < 1:
        raise ValueError(f"ema_decay must be in [0, 1), got {config.ema_decay}")


def incompatible_keys(old: TrainConfig, new: TrainConfig) -> list[str]:
    """Keys whose values differ between two configs, other than those a resumed run may change
    (`RESUMABLE_KEYS` and the family's `sampling_keys`)."""
    a, b = to_dict(old), to_dict(new)
    may_change = RESUMABLE_KEYS | new.sampling_keys
    return sorted(k for k in a.keys() | b.keys() if k not in may_change and a.get(k) != b.get(k))
