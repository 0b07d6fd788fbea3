"""shapes: rendering speed, grader speed, and how well the grader reads damaged images.

    flock /tmp/minimodal-cpu.lock .venv/bin/python bench/bench_shapes.py

Prints markdown tables (speed: best of `--repeats`); the recorded figures are in bench/results/shapes.md.
The robustness table reads 600 scenes per size after each kind of damage a generator might do
(the same damages as tests/test_shapes.py, plus harsher ones), so it shows where the grader stops being exact.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

from minimodal.data import shapes
from minimodal.metrics import caption_fidelity


def best_of(repeats: int, fn: Callable[..., object], *args: Any, **kwargs: Any) -> float:
    """Fastest of `repeats` calls of fn(*args, **kwargs), in seconds."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(*args, **kwargs)
        times.append(time.perf_counter() - t0)
    return min(times)


def box_blur(images: np.ndarray) -> np.ndarray:
    """3 x 3 box blur (soft edges)."""
    size = images.shape[1]
    padded = np.pad(images.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
    return sum(padded[:, 1 + a:size + 1 + a, 1 + b:size + 1 + b] for a in (-1, 0, 1) for b in (-1, 0, 1)) / 9


def rim_errors(images: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    """Ragged edges: each pixel on either side of the outline flips with probability p."""
    fg = images.any(-1)
    size = images.shape[1]
    padded = np.pad(fg, ((0, 0), (1, 1), (1, 1)))
    neighbours = sum(padded[:, 1 + a:size + 1 + a, 1 + b:size + 1 + b]
                     for a, b in ((0, 1), (1, 0), (0, -1), (-1, 0)))
    flip = ((fg & (neighbours < 4)) | (~fg & (neighbours > 0))) & (rng.random(fg.shape) < p)
    colour = images.reshape(len(images), -1, 3).max(1)[:, None, None, :]
    return np.where((flip & fg)[..., None], 0, np.where((flip & ~fg)[..., None], colour, images))


def specks(images: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    out = images.copy()
    n, size = len(images), images.shape[1]
    for _ in range(k):
        out[np.arange(n), rng.integers(0, size, n), rng.integers(0, size, n)] = rng.integers(100, 256, (n, 3))
    return out


def down_up(images: np.ndarray) -> np.ndarray:
    """Bilinear down to half size and back up: blurry, slightly shifted edges."""
    s = images.shape[1]
    return np.stack([np.asarray(Image.fromarray(im).resize((s // 2, s // 2), Image.BILINEAR)
                                .resize((s, s), Image.BILINEAR)) for im in images])


def damages(rng: np.random.Generator) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    def tint(x: np.ndarray) -> np.ndarray:
        fg = x.any(-1, keepdims=True)
        return np.where(fg, 0.7 * x + rng.uniform(-25, 25, (len(x), 1, 1, 3)), x)

    return {
        "none": lambda x: x,
        "Gaussian noise sigma 12": lambda x: x + rng.normal(0, 12, x.shape),
        "Gaussian noise sigma 25": lambda x: x + rng.normal(0, 25, x.shape),
        "dimmed 0.7 and tinted +-25": tint,
        "3 stray bright pixels": lambda x: specks(x, 3, rng),
        "ragged rim (25% of edge pixels flipped)": lambda x: rim_errors(x, 0.25, rng),
        "3x3 box blur": box_blur,
        "bilinear down x2 and up": down_up,
    }


def robustness(n: int) -> list[str]:
    rows = ["| damage | 16 px small / large | 32 px small / large | 64 px small / large |",
            "| --- | --- | --- | --- |"]
    data = {s: shapes.generate(n, s, seed=3) for s in (16, 32, 64)}
    for name in damages(np.random.default_rng(0)):
        cells = []
        for size, d in data.items():
            damaged = damages(np.random.default_rng(size))[name](d["images"])
            images = np.clip(np.rint(damaged), 0, 255).astype(np.uint8)
            want = [{k: o[k] for k in ("color", "shape", "position")} for (o,) in d["objects"]]
            ok = np.array([shapes.read_attributes(im) == w for im, w in zip(images, want)])
            large = np.array([o["size"] == "large" for (o,) in d["objects"]])
            cells.append(f"{ok[~large].mean():.3f} / {ok[large].mean():.3f}")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="images rendered per timing")
    parser.add_argument("--n-grade", type=int, default=2_000, help="images graded per timing")
    parser.add_argument("--n-robust", type=int, default=600, help="scenes per size in the robustness table")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    print("| what | images/s |\n| --- | --- |")
    for size in (16, 32, 64):
        t = best_of(args.repeats, shapes.generate, args.n, size)
        print(f"| generate {args.n:,} one-object scenes at {size} px | {args.n / t:,.0f} |")
    for options in ({"objects": 2}, {"background": "noise"}, {"background": "by_shape"}):
        t = best_of(args.repeats, shapes.generate, args.n, 32, **options)
        label = ", ".join(f"{k}={v}" for k, v in options.items())
        print(f"| generate {args.n:,} scenes at 32 px, {label} | {args.n / t:,.0f} |")
    for size in (16, 32, 64):
        data = shapes.generate(args.n_grade, size, seed=1)
        t = best_of(args.repeats, caption_fidelity, data["images"], data["objects"])
        print(f"| grade {args.n_grade:,} images at {size} px (`caption_fidelity`, `read_attributes` each) "
              f"| {args.n_grade / t:,.0f} |")
    print()
    print("\n".join(robustness(args.n_robust)))


if __name__ == "__main__":
    main()
