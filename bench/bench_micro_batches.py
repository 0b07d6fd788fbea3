"""Steps per second of a training run by `micro_batches` (the batch's gradient taken over k slices in turn).

Each row is a fresh process training one preset for a few hundred steps (`train.fit` into a fresh work
directory; a DALL-E run first trains a 20-step image tokenizer of its own preset, which only supplies the codes)
and reads the trainer's own `steps_per_sec` from metrics.jsonl: the median over the log intervals after the
first (which holds the compilation). Wall: the whole process, compile and data included.

    python bench/bench_micro_batches.py dalle:default:300:1,2,4 ddpm:default:300:1,2,4   # prints markdown rows
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUN = """
import sys
from minimodal import dalle, train, vqvae
from minimodal.config import override
from minimodal.models import get_family
name, preset, steps, k, workdir = sys.argv[1:]
family = get_family(name)
config = override(family.presets[preset], {"steps": int(steps), "micro_batches": int(k), "log_every": 50})
if name == "dalle":  # the codes of a briefly trained tokenizer: the transformer's step costs the same
    codes = workdir + "/codes"
    train.fit(vqvae.FAMILY, override(dalle._tokenizer_config(config), {"steps": 20}), codes, progress=False)
    config = override(config, {"image_tokenizer": codes})
train.fit(family, config, workdir + "/run", progress=False)
"""


def measure(family: str, preset: str, steps: int, k: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as workdir:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", RUN, family, preset, str(steps), str(k), workdir], check=True)
        wall = time.perf_counter() - start
        rates = [r["steps_per_sec"] for r in map(json.loads, (Path(workdir) / "run/metrics.jsonl").open())
                 if "steps_per_sec" in r]
    return {"wall": wall, "steps_per_sec": statistics.median(rates[1:])}


def main(specs: list[str]) -> None:
    print("| run | micro_batches | steps / s (median after compiling) | wall, whole process |")
    print("| --- | --- | --- | --- |")
    for spec in specs:
        family, preset, steps, ks = spec.split(":")
        for k in map(int, ks.split(",")):
            m = measure(family, preset, int(steps), k)
            print(f"| {family} `{preset}`, {steps} steps | {k} | {m['steps_per_sec']:.2f} | {m['wall']:.0f} s |",
                  flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or ["dalle:default:300:1,2,4", "ddpm:default:300:1,2,4"])
