"""A tiny model family for testing the trainer without any real model: softmax regression on pixels."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from minimodal.config import TrainConfig
from minimodal.train import Family


@dataclasses.dataclass(frozen=True)
class ToyConfig(TrainConfig):
    steps: int = 40
    batch_size: int = 16
    lr: float = 0.05
    warmup_steps: int = 5
    log_every: int = 5
    checkpoint_every: int = 10
    image_size: int = 8
    context_length: int = 8
    vocab_size: int = 270
    classes: int = 3
    nan_after: int = -1  # the loss becomes NaN from this call on (-1: never)


class Toy(nnx.Module):
    def __init__(self, config: ToyConfig, rngs: nnx.Rngs):
        self.linear = nnx.Linear(config.image_size ** 2 * 3, config.classes, rngs=rngs)
        self.calls = nnx.Variable(jnp.zeros((), jnp.int32))  # non-Param state the loss updates
        self.nan_after = config.nan_after


def build(config, tokenizer, rngs):
    return Toy(config, rngs)


def loss_fn(model: Toy, batch, rng):
    logits_BC = model.linear(batch["images"].reshape(batch["images"].shape[0], -1))
    loss = optax.softmax_cross_entropy_with_integer_labels(logits_BC, batch["labels"]).mean()
    if model.nan_after >= 0:
        loss = jnp.where(model.calls[...] >= model.nan_after, jnp.nan, loss)
    model.calls[...] = model.calls[...] + 1
    return loss, {"accuracy": (logits_BC.argmax(-1) == batch["labels"]).mean()}


def toy_examples(n: int = 96, size: int = 8, classes: int = 3, seed: int = 0) -> dict:
    """Images whose mean brightness encodes the label, captioned with the label's name."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n).astype(np.int32)
    images = rng.integers(0, 60, (n, size, size, 3)) + 80 * labels[:, None, None, None]
    names = ["dark", "grey", "bright", "white"]
    return {"images": images.astype(np.uint8), "labels": labels,
            "captions": [f"a {names[c]} square" for c in labels]}


FAMILY = Family(name="toy", config_class=ToyConfig, presets={"default": ToyConfig(), "tiny": ToyConfig()},
                build=build, loss_fn=loss_fn)


CLI_SCRIPT = textwrap.dedent("""
    import dataclasses, sys
    sys.path.insert(0, {tests!r})
    from minimodal import cli
    from minimodal.models import register
    from toy_family import FAMILY
    register(dataclasses.replace(FAMILY, **{changes!r}))
    sys.exit(cli.main(sys.argv[1:]))
""")


def cli_script(path: Path, **changes) -> Path:
    """Write a script at `path` that runs minimodal's command line with the toy family (with `changes`, e.g.
    `one_device_per_core=True`) registered: for tests that need `minimodal train toy` in fresh processes."""
    path.write_text(CLI_SCRIPT.format(tests=str(Path(__file__).parent), changes=changes))
    return path
