"""DALL-E sampling: the KV cache vs recomputing the whole stream, and training steps/s.

    flock /tmp/minimodal-cpu.lock .venv/bin/python bench/bench_dalle.py [key=value ...]

Both samplers draw the 64 image tokens of a batch inside one compiled `lax.fori_loop` with the same keys
(they return the same tokens); the cached one feeds one token per step through `Transformer.decode`, the
other runs the full T + N - 1 stream every step. Weights are random (speed does not depend on them). Plain
sampling (no top-k / top-p: inactive filters are compiled out), then once more with the default filters.
Prints a markdown table; the recorded results are in bench/results/dalle.md.
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from minimodal import dalle, vqvae
from minimodal.config import override
from timing import best_of  # bench/timing.py (scripts run as python bench/...)


class _TextVocab:
    vocab_size = 384


def train_steps_per_sec(family_loss, model, batch, steps: int = 10) -> float:
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    @jax.jit
    def grad_step(params, rest, rng):
        def loss(p):
            return family_loss(nnx.merge(graphdef, p, rest, copy=True), batch, rng)[0]
        return jax.grad(loss)(params)

    def run():
        for i in range(steps):
            out = grad_step(params, rest, jax.random.key(i))
        return out

    return steps / best_of(run, repeats=2)


def main(argv: list[str]) -> None:
    c = override(dalle.PRESETS["default"], argv)
    model = dalle.build(c, _TextVocab(), nnx.Rngs(0))
    B = 16
    text_BT = jax.random.randint(jax.random.key(1), (B, c.context_length), 3, 384)
    rows = []
    for cached in (True, False):
        seconds = best_of(lambda: dalle.sample(model, text_BT, jax.random.key(2), cached=cached))
        rows.append(("cached (KV cache)" if cached else "recompute the stream", seconds))
    speedup = rows[1][1] / rows[0][1]
    print(f"sampling 64 image tokens for a batch of {B}, dim={c.dim}, depth={c.depth}, T={c.context_length}\n")
    print("| sampler | seconds per batch | ms per token step |\n| --- | --- | --- |")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.3f} | {1000 * seconds / 64:.1f} |")
    print(f"\nspeed-up of the cache: {speedup:.1f}x")
    seconds = best_of(lambda: dalle.sample(model, text_BT, jax.random.key(2), temperature=c.temperature,
                                           top_k=c.top_k, top_p=c.top_p))
    print(f"cached with the default filters (temperature {c.temperature}, top-k {c.top_k}): {seconds:.3f} s per batch, "
          f"{1000 * seconds / 64:.1f} ms per token step\n")

    images = jnp.zeros((c.batch_size, c.image_size, c.image_size, 3))
    tok = vqvae.PRESETS[c.tokenizer_preset]
    tokenizer = vqvae.build(tok, None, nnx.Rngs(0))
    batch = {"tokens": jnp.zeros((c.batch_size, c.context_length), jnp.int32).at[:, 0].set(1),
             "image_tokens": jnp.zeros((c.batch_size, c.grid, c.grid), jnp.int32)}
    print("| training (forward + backward) | batch | steps/s |\n| --- | --- | --- |")
    print(f"| VQ-VAE ({tok.width}/{tok.hidden} channels) | {tok.batch_size} | "
          f"{train_steps_per_sec(vqvae.loss_fn, tokenizer, {'images': images[:tok.batch_size]}):.2f} |")
    print(f"| DALL-E transformer (dim {c.dim}, depth {c.depth}) | {c.batch_size} | "
          f"{train_steps_per_sec(dalle.family_loss_fn, model, batch):.2f} |")
    print(f"\njax {jax.__version__}, backend {jax.default_backend()}, numpy {np.__version__}")


if __name__ == "__main__":
    main(sys.argv[1:])
