"""What every lesson notebook sets up the same way: fast mode, where runs live, this machine's preset, pictures.

    MINIMODAL_FAST=1     tiny presets that run in seconds (what the notebook tests use)
    MINIMODAL_RUNS=DIR   where work directories go (default runs/, the same as the README's CLI commands)

On a GPU or TPU backend a lesson picks each model's `gpu` preset by itself; on a CPU, its own choice.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
import numpy as np

from minimodal.viz import image_grid

FAST: bool = os.environ.get("MINIMODAL_FAST") == "1"
RUNS: Path = Path(os.environ.get("MINIMODAL_RUNS", "runs"))
BIG: bool = jax.default_backend() != "cpu"


def preset(cpu: str = "default") -> str:
    """The preset for this run: "tiny" in fast mode, "gpu" on an accelerator, else `cpu`."""
    return "tiny" if FAST else "gpu" if BIG else cpu


def workdir(model: str, preset_name: str) -> Path:
    """RUNS/<model> for the default preset (where the README's `minimodal train` command writes),
    RUNS/<model>_<preset> for any other, so a fast or GPU run never resumes a default one."""
    return RUNS / (model if preset_name == "default" else f"{model}_{preset_name}")


def show(images, title: str = "", ncols: int | None = None, upscale: int = 3, figsize=(10, 3),
         labels=None) -> None:
    """Draw uint8 images (N, H, W, 3) as one grid, `ncols` per row, each pixel `upscale` × `upscale`;
    with `labels` (one string per image), as one small panel per image with its label above it."""
    import matplotlib.pyplot as plt

    images = np.asarray(images)
    if labels is None:
        plt.figure(figsize=figsize)
        plt.imshow(image_grid(images, ncols=ncols, upscale=upscale))
        plt.title(title)
        plt.axis("off")
        plt.show()
        return
    if len(labels) != len(images):
        raise ValueError(f"show: {len(labels)} labels for {len(images)} images")
    ncols = ncols or len(images)
    nrows = -(-len(images) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.3 * ncols, 1.5 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, label in zip(axes.flat, images, labels):
        ax.imshow(image, interpolation="nearest")
        ax.set_title(label, fontsize=7)
    fig.suptitle(title, fontsize=10)
    plt.tight_layout()
    plt.show()
