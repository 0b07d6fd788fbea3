"""unCLIP speed: seconds per image of generate (CLIP text embedding -> prior -> decoder), of the prior alone,
and of vary (CLIP image embedding -> decoder), on a trained run (speed does not depend on the weights, but the
run's CLIP and prior are needed).

    .venv/bin/python bench/bench_unclip.py runs/unclip [batch ...]

Each figure is the best of 2 calls after a warm-up call that compiles; the decoder samples DDIM-`sample_steps`
with classifier-free guidance (both passes batched), the prior DDIM-`sample_steps` of its own with 2
candidates per prompt. Prints a markdown table; the recorded results are in bench/results/unclip.md.
"""

from __future__ import annotations

import sys

import minimodal
from minimodal.data import shapes
from timing import best_of  # bench/timing.py (scripts run as python bench/...)


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit("usage: bench_unclip.py WORKDIR [batch ...]")
    pipe = minimodal.load(argv[0])
    batches = [int(b) for b in argv[1:]] or [16, 64]
    print(f"unCLIP {argv[0]}: decoder {pipe.config.image_size} px, DDIM-{pipe.config.sample_steps}, guidance "
          f"{pipe.config.guidance:g}; prior DDIM-{pipe.prior.config.sample_steps}, {pipe.prior.config.candidates} "
          "candidates\n")
    print("| batch | generate s/image | prior s/prompt | vary s/image |\n| --- | --- | --- | --- |")
    for batch in batches:
        prompts = shapes.typed_prompts(batch, seed=1)["captions"]
        images = shapes.generate(batch, pipe.clip.config.image_size, seed=2)["images"]
        generate = best_of(lambda: pipe.generate(prompts, seed=0), repeats=2)
        prior = best_of(lambda: pipe.embed_prompts(prompts, seed=0), repeats=2)
        vary = best_of(lambda: pipe.vary(images, n=1, seed=0), repeats=2)
        print(f"| {batch} | {generate / batch:.3f} | {prior / batch:.4f} | {vary / batch:.3f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
