"""DDPM sampling: caption fidelity against seconds per image, over samplers, step counts and guidance scales.

    flock /tmp/minimodal-cpu.lock .venv/bin/python bench/bench_ddpm_sampling.py runs/ddpm \\
        [--samplers ddim dpm++2m] [--steps 50 25 15 10 5] [--guidance 3] [--prompts 200] [--batch 100]

For each (sampler, steps, guidance w): the trained DDPM in WORKDIR draws `--prompts` prompts as people type them
(`shapes.typed_prompts`: "a red circle", "a small blue square", ...; train pairs, one fixed seed), the exact
grader reads colour and shape back (fidelity), per shape too; seconds per image are the best of two timed calls
of one batch of `--batch` prompts after a compiling call. Prints a markdown table and appends it, dated, to
bench/results/ddpm.md (`--out`).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import itertools
import os
import platform
import time
from pathlib import Path

import numpy as np

from minimodal import load
from minimodal.data import shapes
from minimodal.metrics import typed_prompt_fidelity


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workdir")
    parser.add_argument("--samplers", nargs="+", default=["ddim", "dpm++2m"])
    parser.add_argument("--steps", type=int, nargs="+", default=[50, 25, 15, 10, 5])
    parser.add_argument("--guidance", type=float, nargs="+", default=[3.0])
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--out", default="bench/results/ddpm.md")
    args = parser.parse_args()

    pipeline = load(args.workdir)
    seed = 12_345  # of the typed prompts
    timing_batch = shapes.typed_prompts(args.batch, seed=seed, split="train")["captions"]
    lines = [f"## Sampler steps against fidelity ({datetime.date.today()}, `bench/bench_ddpm_sampling.py "
             f"{args.workdir}`)", "",
             f"{platform.machine()}, {os.cpu_count()} CPU cores; {args.prompts} typed prompts (train pairs), "
             f"seconds per image at batch {args.batch} (best of 2, compilation excluded)", "",
             "| sampler | steps | guidance | fidelity | " + " | ".join(shapes.SHAPES) + " | s / image |",
             "| --- | --- | --- | --- | " + " | ".join("---" for _ in shapes.SHAPES) + " | --- |"]
    for sampler, w, steps in itertools.product(args.samplers, args.guidance, args.steps):
        generate = functools.partial(pipeline.generate, steps=steps, guidance=w, sampler=sampler)
        graded = typed_prompt_fidelity(lambda prompts: generate(prompts, seed=0), args.prompts, seed)
        per_shape = [f"{graded.get(f'fidelity_{shape}', float('nan')):.0%}"  # nan: no prompt asked for it
                     for shape in shapes.SHAPES]
        seconds = []
        for timing_seed in (1, 2):
            start = time.perf_counter()
            np.asarray(generate(timing_batch, seed=timing_seed))
            seconds.append((time.perf_counter() - start) / len(timing_batch))
        line = (f"| {sampler} | {steps} | {w:g} | {graded['fidelity']:.1%} | " + " | ".join(per_shape)
                + f" | {min(seconds):.3f} |")
        lines.append(line)
        print(line, flush=True)
    text = "\n".join(lines) + "\n"
    with Path(args.out).open("a") as f:
        f.write("\n" + text)
    print(text)


if __name__ == "__main__":
    main()
