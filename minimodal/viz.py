"""Pictures a learner can look at: image grids as PNG files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def image_grid(images: np.ndarray, ncols: int | None = None, upscale: int = 1, pad: int = 1) -> np.ndarray:
    """Tile uint8 images (N, H, W, 3) into one uint8 image, `ncols` per row, with a grey `pad`."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"image_grid expects uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
    n, h, w, c = images.shape
    ncols = ncols or int(np.ceil(np.sqrt(n)))
    nrows = int(np.ceil(n / ncols))
    if upscale > 1:
        images = images.repeat(upscale, axis=1).repeat(upscale, axis=2)
        h, w = h * upscale, w * upscale
    grid = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), 96, np.uint8)
    for i, image in enumerate(images):
        r, col = divmod(i, ncols)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        grid[y:y + h, x:x + w] = image
    return grid


def film_strip(trajectory: np.ndarray, frames: int = 10) -> np.ndarray:
    """`frames` evenly spaced steps of a sampling trajectory (S, N, H, W, 3), first and last included, laid
    out for `image_grid(..., ncols=frames)`: (N · frames, H, W, 3), one row per image, noise -> image."""
    trajectory = np.asarray(trajectory)
    picked = trajectory[np.linspace(0, len(trajectory) - 1, frames).round().astype(int)]  # (frames, N, H, W, 3)
    return picked.transpose(1, 0, 2, 3, 4).reshape(-1, *trajectory.shape[2:])


def save_grid(images: np.ndarray, path: str | Path, ncols: int | None = None, upscale: int = 4) -> Path:
    """Write `image_grid(images)` to a PNG file and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image_grid(images, ncols, upscale)).save(path)
    return path
