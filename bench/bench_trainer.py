"""The trainer's overhead: steps/s of a small model through `minimodal.train.fit` vs a bare jit-compiled step.

Both run the same model, loss, optimiser and batches (the same `Batches` object) on one device; the bare
loop is `state = step(state, batch)` in Python with nothing else. The trainer adds sharding, the progress
bar, metric logging, the non-finite guard and a checkpoint at the end (excluded: it is set-up, not a step).

    python bench/bench_trainer.py            # appends a row to bench/results/trainer.md
"""

from __future__ import annotations

import dataclasses
import platform
import sys
import tempfile
import time
from pathlib import Path

import jax
import optax
from flax import nnx

from minimodal import train
from minimodal.config import TrainConfig
from minimodal.data import Batches, load_examples
from minimodal.tokenizer import Tokenizer


@dataclasses.dataclass(frozen=True)
class MLPConfig(TrainConfig):
    hidden: int = 1024
    batch_size: int = 128
    steps: int = 400
    log_every: int = 50
    checkpoint_every: int = 10_000
    n_train: int = 4096


class MLP(nnx.Module):
    def __init__(self, config: MLPConfig, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(config.image_size ** 2 * 3, config.hidden, rngs=rngs)
        self.out = nnx.Linear(config.hidden, 24, rngs=rngs)

    def __call__(self, images_BHWC):
        return self.out(jax.nn.gelu(self.hidden(images_BHWC.reshape(images_BHWC.shape[0], -1))))


def loss_fn(model, batch, rng):
    logits_BC = model(batch["images"])
    return optax.softmax_cross_entropy_with_integer_labels(logits_BC, batch["labels"]).mean(), {}


FAMILY = train.Family("bench-mlp", MLPConfig, {"default": MLPConfig()}, lambda c, t, r: MLP(c, r), loss_fn)


def bare_steps_per_sec(config: MLPConfig, batches: Batches, steps: int) -> float:
    model = MLP(config, nnx.Rngs(config.seed))
    graphdef, params = nnx.split(model, nnx.Param)
    tx = train.make_optimizer(config)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, batch):
        loss, grads = jax.value_and_grad(lambda p: loss_fn(nnx.merge(graphdef, p), batch, None)[0])(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    params, opt_state, loss = step(params, opt_state, batches.batch(0))  # compile
    loss.block_until_ready()
    start = time.perf_counter()
    for s in range(1, steps + 1):
        params, opt_state, loss = step(params, opt_state, batches.batch(s))
    loss.block_until_ready()
    return steps / (time.perf_counter() - start)


def main() -> None:
    config = MLPConfig()
    examples = load_examples("shapes", "train", config.n_train, config.image_size, config.seed)
    tokenizer = Tokenizer.train(examples["captions"], config.vocab_size)
    device = jax.devices()[:1]
    batches = Batches(examples, tokenizer, config.batch_size, config.context_length, config.seed)
    results = {}
    for repeat in range(2):  # alternate to even out machine noise; keep the best of each
        bare = bare_steps_per_sec(config, batches, config.steps - config.log_every)
        with tempfile.TemporaryDirectory() as workdir:
            trained = train.fit(FAMILY, config, workdir, examples=examples, tokenizer=tokenizer, devices=device,
                                progress=False)
            trainer = (config.steps - config.log_every) / trained.seconds
        results["bare"] = max(results.get("bare", 0), bare)
        results["trainer"] = max(results.get("trainer", 0), trainer)
    overhead = 1 - results["trainer"] / results["bare"]
    flops = 6 * config.batch_size * (config.image_size ** 2 * 3 * config.hidden + config.hidden * 24)
    row = (f"| 2026-11-23 | 2-core CPU, 24 GiB, no GPU (jax {jax.__version__}, {platform.python_version()}) "
           f"| MLP {config.image_size ** 2 * 3}-{config.hidden}-24, batch {config.batch_size} "
           f"(~{flops / 1e9:.1f} GFLOP/step) | {results['bare']:.1f} | {results['trainer']:.1f} | "
           f"{100 * overhead:.1f}% |")
    print(row)
    out = Path(__file__).parent / "results" / "trainer.md"
    if not out.exists():
        out.write_text("# Trainer overhead\n\n`python bench/bench_trainer.py` — steps/s through `train.fit` vs "
                       "a bare jit step loop, same model, optimiser and batches, one device.\n\n"
                       "| date | machine | model | bare steps/s | trainer steps/s | overhead |\n"
                       "| --- | --- | --- | --- | --- | --- |\n")
    with out.open("a") as f:
        f.write(row + "\n")


if __name__ == "__main__":
    sys.exit(main())
