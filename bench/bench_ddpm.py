"""DDPM speed: training steps/s (the trainer's own jit-compiled step) and sampling seconds per image.

    flock /tmp/minimodal-cpu.lock .venv/bin/python bench/bench_ddpm.py [key=value ...]

Sampling draws 16 images with classifier-free guidance (each step one U-Net call on 2 × 16 inputs),
DDIM-`sample_steps` and the ancestral sampler over all T steps, each one compiled `lax.scan`.
Weights are random (speed does not depend on them). Prints a markdown table; the recorded results
are in bench/results/ddpm.md.
"""

from __future__ import annotations

import sys

import jax
import numpy as np
from flax import nnx

from minimodal import ddpm, train
from minimodal.config import override
from minimodal.data import Batches, load_examples
from minimodal.tokenizer import Tokenizer
from timing import best_of  # bench/timing.py (scripts run as python bench/...)


def main(argv: list[str]) -> None:
    config = override(ddpm.PRESETS["default"], argv)
    examples = load_examples("shapes", "train", 512, config.image_size, config.seed)
    tokenizer = Tokenizer.train(examples["captions"], config.vocab_size)
    model = ddpm.build(config, tokenizer, nnx.Rngs(0))
    params = sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param)))

    tx = train.make_optimizer(config)
    graphdef, state = train._initial_state(model, tx, config)
    step = jax.jit(train.make_train_step(ddpm.FAMILY, graphdef, tx, config))  # no donation: `model` samples later
    batches = Batches(examples, tokenizer, config.batch_size, config.context_length, config.seed)
    batch = batches.batch(0)
    n_steps = 10
    state, _ = step(state, batch)  # compile

    def run_steps():
        nonlocal state
        for _ in range(n_steps):
            state, metrics = step(state, batch)
        return metrics["loss"]

    steps_per_s = n_steps / best_of(run_steps, repeats=2)

    prompts = ["a red circle", "a large blue square at the top left"] * 8
    rows = []
    for sampler, steps in ((config.sampler, config.sample_steps), ("ancestral", config.diffusion_steps)):
        seconds = best_of(lambda: ddpm.sample(model, tokenizer, prompts, jax.random.key(0), sampler=sampler),
                          repeats=1 if sampler == "ancestral" else 2)
        rows.append((f"{sampler}-{steps}", seconds / len(prompts)))

    print(f"DDPM default config: {params:,} parameters, image {config.image_size} px, U-Net at "
          f"{config.image_size // config.patch} px, channels {config.channels}, T = {config.diffusion_steps}\n")
    print("| measurement | value |\n| --- | --- |")
    print(f"| training steps/s (batch {config.batch_size}) | {steps_per_s:.2f} |")
    print(f"| training images/s | {steps_per_s * config.batch_size:.0f} |")
    for name, seconds in rows:
        print(f"| {name} with guidance, s per image (batch {len(prompts)}) | {seconds:.3f} |")
    print(f"\nDDIM speed-up over ancestral: {rows[1][1] / rows[0][1]:.1f}×")
    np.testing.assert_equal(np.isfinite(float(run_steps())), True)


if __name__ == "__main__":
    main(sys.argv[1:])
