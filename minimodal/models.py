"""The registry of model families the trainer, the CLI and `minimodal.load` know by name."""

from __future__ import annotations

import importlib

FAMILIES = {
    "clip": "minimodal.clip",
    "vqvae": "minimodal.vqvae",
    "dalle": "minimodal.dalle",
    "ddpm": "minimodal.ddpm",
    "unclip": "minimodal.unclip",
    "unclip_prior": "minimodal.prior",
    "assistant": "minimodal.assistant",
    "whisper": "minimodal.whisper",
}
_REGISTERED = {}  # families added at run time (your own model, or the tests' toy family)


def register(family) -> None:
    """Make a `minimodal.train.Family` known by its name, e.g. to `minimodal.load`."""
    _REGISTERED[family.name] = family


def get_family(name: str):
    """The `minimodal.train.Family` registered as `name` (each module defines `FAMILY`)."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name not in FAMILIES:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(FAMILIES)}")
    return importlib.import_module(FAMILIES[name]).FAMILY
