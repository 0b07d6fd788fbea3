"""CLIP-guided generation (VQGAN + CLIP): caption fidelity by the exact grader, the CLIP score that was optimised,
and seconds per image, through a VQGAN (and optionally a plain VQ-VAE) against raw pixels, with cut-outs on and
off, on train-distribution and held-out (colour, shape) pairs; then the ablations of the recipe (train pairs):
random codes instead of the blank canvas, no total-variation penalty, smaller cut-outs with less noise, and the
first version (all three). With `--candidates`, best-of-n through the VQGAN: each prompt optimised n times and
the candidate a judge CLIP (`--judge`, default the guiding one) scores highest kept, on two seeds.

    flock /tmp/minimodal-cpu.lock .venv/bin/python bench/bench_clip_guided.py --clip runs/clip --vqgan runs/vqgan \\
        [--vqvae runs/vqvae] [--steps 100] [--cutouts 16] [--per-pair 2] [--no-ablations] \\
        [--judge runs/clip-s1 --candidates 1 2 4 [--only-candidates]]

Prints a markdown table and writes it to bench/results/clip_guided.md (`--out`).
The CLIP score is cos(CLIP image embedding of the whole image, prompt embedding) under the same CLIP that guided
the optimisation: it shows what was optimised, not whether the picture is right (that is the grader's job).
Seconds per image: the whole batch at once, second run (compilation excluded); ablation rows run once ("—").
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time
from pathlib import Path

from minimodal.clip_guided import ClipGuided, evaluate

ABLATIONS = {  # what each change of the recipe is worth (train pairs, one run each)
    "init=random (random codes, not the grey blob)": {"init": "random"},
    "tv_weight=0": {"tv_weight": 0.0},
    "cut_min=0.5, noise=0.1": {"cut_min": 0.5, "noise": 0.1},
    "first version: random codes, no TV, cut_min 0.5, noise 0.1": {
        "init": "random", "tv_weight": 0.0, "cut_min": 0.5, "noise": 0.1},
}


def row(name: str, cutouts: int, split: str, r: dict, timed: bool = True) -> str:
    seconds = f"{r['seconds_per_image']:.2f}" if timed else "—"
    return (f"| {name} | {cutouts} | {split} | {int(r['n'])} | {r['fidelity']:.1%} | {r['color']:.1%} | "
            f"{r['shape']:.1%} | {r['unreadable']:.1%} | {r['clip_score']:.3f} | {seconds} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", required=True)
    parser.add_argument("--vqgan", required=True)
    parser.add_argument("--vqvae", help="a plain VQ-VAE work directory: the same optimisation through it")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--cutouts", type=int, default=16)
    parser.add_argument("--per-pair", type=int, default=2, help="prompts per (colour, shape) pair")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-ablations", action="store_true")
    parser.add_argument("--judge", help="a second CLIP work directory that picks among candidates")
    parser.add_argument("--candidates", type=int, nargs="*", default=[], help="best-of-n rows for these n")
    parser.add_argument("--only-candidates", action="store_true", help="skip the routes and ablations")
    parser.add_argument("--out", default="bench/results/clip_guided.md")
    args = parser.parse_args()
    if args.judge and not any(n > 1 for n in args.candidates):
        parser.error("--judge picks among candidates: give --candidates with an n >= 2")

    routes = {"VQGAN": ClipGuided(args.clip, args.vqgan)}
    if args.vqvae:
        routes["VQ-VAE"] = ClipGuided(routes["VQGAN"].clip, args.vqvae)
    routes["raw pixels"] = ClipGuided(routes["VQGAN"].clip)
    lines = [f"# CLIP-guided generation ({datetime.date.today()}, `bench/bench_clip_guided.py`)", "",
             f"{platform.machine()}, {os.cpu_count()} CPU cores; clip={args.clip} vqgan={args.vqgan} "
             f"vqvae={args.vqvae} steps={args.steps} per_pair={args.per_pair} seed={args.seed}, other options the "
             "defaults; fidelity = colour and shape right by the exact grader; seconds per image: the whole batch at "
             "once, second run (compilation excluded)", "",
             "| route | cut-outs | pairs | prompts | fidelity | colour | shape | unreadable | CLIP score | s / image |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]

    def add(line: str, start: float) -> None:
        lines.append(line)
        print(line, f"({time.perf_counter() - start:.0f} s)", flush=True)

    for name, generator in ({} if args.only_candidates else routes).items():
        for cutouts in dict.fromkeys((args.cutouts, 0)):
            for split in ("train", "holdout"):
                start = time.perf_counter()
                r = evaluate(generator, split, args.per_pair, args.seed, steps=args.steps, cutouts=cutouts)
                add(row(name, cutouts, split, r), start)
    judged = ClipGuided(routes["VQGAN"].clip, routes["VQGAN"].vqgan, args.judge) if args.candidates else None
    for n in args.candidates:  # two seeds; the second run reuses the first's compilation and is the timed one
        name = f"VQGAN, best of {n} by {args.judge or args.clip}" if n > 1 else "VQGAN"
        for seed, timed in ((args.seed, False), (args.seed + 1, True)):
            start = time.perf_counter()
            r = evaluate(judged, "train", args.per_pair, seed, warmup=False, steps=args.steps, cutouts=args.cutouts,
                         candidates=n)
            add(row(f"{name}, seed {seed}", args.cutouts, "train", r, timed=timed), start)
        start = time.perf_counter()
        r = evaluate(judged, "holdout", args.per_pair, args.seed, steps=args.steps, cutouts=args.cutouts, candidates=n)
        add(row(f"{name}, seed {args.seed}", args.cutouts, "holdout", r), start)
    if not args.no_ablations and not args.only_candidates:
        for name, options in ABLATIONS.items():
            start = time.perf_counter()
            r = evaluate(routes["VQGAN"], "train", args.per_pair, args.seed, warmup=False, steps=args.steps,
                         cutouts=args.cutouts, **options)
            add(row(f"VQGAN, {name}", args.cutouts, "train", r, timed=False), start)
    text = "\n".join(lines) + "\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
