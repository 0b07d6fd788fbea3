"""Steps per second of the trainer's step by `micro_batches` (the batch's gradient taken over k slices in turn).

One process per preset: the trainer's own jitted step (`train.make_train_step`, AdamW, EMA where the preset has
it) on real batches of the preset's data (DALL-E: random image codes, which cost the transformer the same), one
compiled step per k, then the k's timed in alternation — rounds of `steps` steps each — so that the machine's
drift (10–25% on this 2-core CPU) falls on every k alike. Prints the median steps/s over the rounds.

    python bench/bench_micro_batches.py dalle:default:1,4 ddpm:default:1,2,4 ddpm:fast:1,2   # markdown rows
"""

from __future__ import annotations

import statistics
import sys
import time

import jax
import numpy as np
from flax import nnx

from minimodal import train
from minimodal.config import override
from minimodal.data import Batches, load_examples
from minimodal.models import get_family
from minimodal.tokenizer import Tokenizer


def rates(name: str, preset: str, ks: list[int], rounds: int = 5, steps: int = 20) -> dict[int, float]:
    family = get_family(name)
    base = family.presets[preset]
    examples = load_examples(base.data, "train", 2000, base.image_size, 0)
    if name == "dalle":
        grid = base.image_size // base.downsample
        examples["image_tokens"] = np.random.default_rng(0).integers(0, base.image_vocab_size, (2000, grid, grid))
    tokenizer = Tokenizer.train(examples["captions"], base.vocab_size)
    batches = Batches(examples, tokenizer, base.batch_size, base.context_length, 0)
    runs = {}
    for k in ks:
        config = override(base, {"micro_batches": k, "text_from_clip": ""} if name == "ddpm" else
                          {"micro_batches": k})
        tx = train.make_optimizer(config)
        graphdef, state = train._initial_state(family.build(config, tokenizer, nnx.Rngs(0)), tx, config, ())
        step = jax.jit(train.make_train_step(family, graphdef, tx, config), donate_argnums=0)
        state, _ = step(state, batches.batch(0))  # compile
        runs[k] = [step, state]
    times: dict[int, list[float]] = {k: [] for k in ks}
    for r in range(rounds):
        for k in ks:
            step, state = runs[k]
            start = time.perf_counter()
            for s in range(steps):
                state, metrics = step(state, batches.batch(r * steps + s))
            jax.block_until_ready(metrics)
            times[k].append(steps / (time.perf_counter() - start))
            runs[k][1] = state
    return {k: statistics.median(v) for k, v in times.items()}


def main(specs: list[str]) -> None:
    print("| preset | micro_batches | steps / s (median of 5 alternating rounds of 20) | against k = 1 |")
    print("| --- | --- | --- | --- |")
    for spec in specs:
        name, preset, ks = spec.split(":")
        result = rates(name, preset, [int(k) for k in ks.split(",")])
        for k, rate in result.items():
            print(f"| {name} `{preset}` | {k} | {rate:.2f} | {rate / result[min(result)]:.2f}× |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or ["dalle:default:1,4", "ddpm:default:1,2,4", "ddpm:fast:1,2"])
