"""CLIP training throughput through the one trainer: steps/s and images/s of a preset, plus eval time.

    flock /tmp/minimodal-cpu.lock .venv/bin/python bench/bench_clip.py [--preset P] [--steps N] [key=value ...]

Trains `--steps` steps with `minimodal.train.fit` in a temporary work directory and reads the trainer's
own `steps_per_sec` from metrics.jsonl (the first logged interval, which includes compilation, is
dropped); then times `FAMILY.evaluate` (zero-shot on 1,200 + 400 images, retrieval on 1,200).
Prints a markdown table; the recorded figures are in bench/results/clip.md.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import jax
import numpy as np

from minimodal import clip, train
from minimodal.config import override


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default", choices=sorted(clip.PRESETS))
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("overrides", nargs="*", help="config key=value")
    args = parser.parse_args()
    config = override(clip.PRESETS[args.preset], [f"steps={args.steps}", "log_every=25", *args.overrides])
    with tempfile.TemporaryDirectory() as workdir:
        t0 = time.perf_counter()
        trained = train.fit(clip.FAMILY, config, workdir, progress=False)
        wall = time.perf_counter() - t0
        rates = [row["steps_per_sec"] for row in train.read_metrics(workdir)[1:]]
        t1 = time.perf_counter()
        metrics = clip.FAMILY.evaluate(trained.model, config, trained.tokenizer, workdir)
        eval_seconds = time.perf_counter() - t1
    steps_per_sec = float(np.median(rates))
    params = sum(p.size for p in jax.tree.leaves(train.nnx.state(trained.model, train.nnx.Param)))
    print(f"| preset | encoder | params | batch | steps/s | images/s | fit wall ({config.steps} steps) "
          "| evaluate |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    print(f"| {args.preset} | {config.encoder} | {params:,} | {config.batch_size} | {steps_per_sec:.2f} | "
          f"{steps_per_sec * config.batch_size:.0f} | {wall:.1f} s | {eval_seconds:.1f} s |")
    print(f"\nafter {config.steps} steps: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))


if __name__ == "__main__":
    main()
