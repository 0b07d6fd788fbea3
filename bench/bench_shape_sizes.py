"""Which prompts a text-to-image model gets wrong: caption fidelity per shape × size.

    flock /tmp/minimodal-cpu.lock .venv/bin/python bench/bench_shape_sizes.py runs/dalle \\
        [--per-pair 6] [--seed 5] [--out bench/results/dalle.md]

For every train colour–shape pair and each size wording (none, "small", "large"), `--per-pair` prompts typed as
a person would ("a red cross", "a small red cross"); the trained model in WORKDIR (DALL-E, DDPM or unCLIP: any
pipeline with `generate(prompts, seed=...)`) draws them with its default sampling, and the exact grader reads
colour and shape back (fidelity) and, where the prompt names one, the size. Prints a markdown table, shape by
size, and appends it, dated, to `--out` (default: bench/results/<model>.md).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from pathlib import Path

from minimodal import load
from minimodal.clip_guided import one_object_prompts
from minimodal.data import shapes
from minimodal.metrics import attribute_accuracy

SIZE_WORDS = ("", "small", "large")  # "": the prompt names no size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workdir")
    parser.add_argument("--per-pair", type=int, default=6, help="prompts per colour-shape pair and size wording")
    parser.add_argument("--seed", type=int, default=5, help="the sampling seed")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    model = json.loads((Path(args.workdir) / "run.json").read_text())["model"]
    out = Path(args.out or f"bench/results/{model}.md")

    pipeline = load(args.workdir)
    plain_prompts, plain_objects = one_object_prompts("train", args.per_pair)  # "a red cross", ...
    start = time.perf_counter()
    cells = {}  # (shape, size word) -> (fidelity, size right or None, prompts)
    for size in SIZE_WORDS:
        prompts = [p.replace("a ", f"a {size} ", 1) if size else p for p in plain_prompts]
        objects = [o | {"size": size} if size else o for o in plain_objects]
        images = pipeline.generate(prompts, seed=args.seed)
        for shape in shapes.SHAPES:
            rows = [k for k, o in enumerate(objects) if o["shape"] == shape]
            acc = attribute_accuracy(images[rows], [objects[k] for k in rows])
            cells[shape, size] = (acc["both"], acc["size"] if size else None, len(rows))
    seconds = time.perf_counter() - start

    header = " | ".join(f"{size or 'no size'}: fidelity (size right)" for size in SIZE_WORDS)
    lines = [f"## Fidelity by shape and size ({datetime.date.today()}, `bench/bench_shape_sizes.py {args.workdir}`)",
             "", f"{platform.machine()}, {os.cpu_count()} CPU cores; {args.per_pair} prompts per train colour–shape "
             f"pair and size wording, sampling seed {args.seed}, the model's default sampling; {seconds:.0f} s", "",
             f"| shape | {header} |", "| --- |" + " --- |" * len(SIZE_WORDS)]
    for shape in shapes.SHAPES:
        row = [f"{cells[shape, size][0]:.0%}" + (f" ({cells[shape, size][1]:.0%})" if size else "")
               for size in SIZE_WORDS]
        lines.append(f"| {shape} ({cells[shape, ''][2]} each) | " + " | ".join(row) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    with out.open("a") as f:
        f.write("\n" + text)


if __name__ == "__main__":
    main()
