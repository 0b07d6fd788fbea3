"""CLIP-guided generation (VQGAN + CLIP): caption fidelity by the exact grader, the CLIP score that was optimised,
and seconds per image, through a VQGAN (and optionally a plain VQ-VAE) against raw pixels, with cut-outs on and
off, on train-distribution and held-out (colour, shape) pairs.

    flock /tmp/minimodal-cpu.lock .venv/bin/python bench/bench_clip_guided.py --clip runs/clip --vqgan runs/vqgan \\
        [--vqvae runs/vqvae] [--steps 100] [--cutouts 16] [--per-pair 2]

Prints a markdown table and writes it to bench/results/clip_guided.md (`--out`). Nothing is recorded yet: the
figures come from the first run of this script on trained work directories.
The CLIP score is cos(CLIP image embedding of the whole image, prompt embedding) under the same CLIP that guided
the optimisation: it shows what was optimised, not whether the picture is right (that is the grader's job).
"""

from __future__ import annotations

import argparse
import datetime
import time
from pathlib import Path

from minimodal.clip_guided import ClipGuided, evaluate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", required=True)
    parser.add_argument("--vqgan", required=True)
    parser.add_argument("--vqvae", help="a plain VQ-VAE work directory: the same optimisation through it")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--cutouts", type=int, default=16)
    parser.add_argument("--per-pair", type=int, default=2, help="prompts per (colour, shape) pair")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench/results/clip_guided.md")
    args = parser.parse_args()

    routes = {"VQGAN": ClipGuided(args.clip, args.vqgan)}
    if args.vqvae:
        routes["VQ-VAE"] = ClipGuided(routes["VQGAN"].clip, args.vqvae)
    routes["raw pixels"] = ClipGuided(routes["VQGAN"].clip)
    lines = [f"# CLIP-guided generation ({datetime.date.today()}, `bench/bench_clip_guided.py`)", "",
             f"clip={args.clip} vqgan={args.vqgan} vqvae={args.vqvae} steps={args.steps} per_pair={args.per_pair} "
             f"seed={args.seed}; fidelity = colour and shape right by the exact grader; seconds per image: the whole "
             "batch at once, second run (compilation excluded)", "",
             "| route | cut-outs | pairs | prompts | fidelity | colour | shape | unreadable | CLIP score | s / image |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, generator in routes.items():
        for cutouts in dict.fromkeys((args.cutouts, 0)):
            for split in ("train", "holdout"):
                start = time.perf_counter()
                r = evaluate(generator, split, args.per_pair, args.seed, steps=args.steps, cutouts=cutouts)
                lines.append(f"| {name} | {cutouts} | {split} | {int(r['n'])} | {r['fidelity']:.1%} | "
                             f"{r['color']:.1%} | {r['shape']:.1%} | {r['unreadable']:.1%} | "
                             f"{r['clip_score']:.3f} | {r['seconds_per_image']:.2f} |")
                print(lines[-1], f"({time.perf_counter() - start:.0f} s)", flush=True)
    text = "\n".join(lines) + "\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
