"""The README's top picture from a finished tour: its DALL-E grid (best of 8 by CLIP) beside its DDPM grid.

    python docs/tour_picture.py runs/tour docs/tour_samples.png

Both grids are the tour's own PNGs (six samples per prompt, one prompt per row, tiles ~128 px); they are set
side by side on a white gap of 16 px, the taller one deciding the height.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

GRIDS = ("dalle_grid.png", "ddpm_grid.png")
GAP = 16  # px of white between the two grids


def compose(tour_dir: Path) -> np.ndarray:
    """uint8 (H, W_dalle + GAP + W_ddpm, 3)."""
    missing = [name for name in GRIDS if not (tour_dir / name).exists()]
    if missing:
        raise FileNotFoundError(f"{tour_dir} has no {', '.join(missing)}: run `minimodal tour --workdir {tour_dir}`")
    grids = [np.asarray(Image.open(tour_dir / name).convert("RGB")) for name in GRIDS]
    height = max(g.shape[0] for g in grids)
    canvas = np.full((height, sum(g.shape[1] for g in grids) + GAP, 3), 255, np.uint8)
    left = 0
    for grid in grids:
        canvas[:grid.shape[0], left:left + grid.shape[1]] = grid
        left += grid.shape[1] + GAP
    return canvas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tour_dir", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    Image.fromarray(compose(args.tour_dir)).save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
