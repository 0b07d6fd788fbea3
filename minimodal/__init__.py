"""minimodal: multimodal generative AI from scratch in JAX — CLIP, DALL-E 1 and DDPM, small enough to
train on a laptop CPU in minutes. See the README and the numbered lessons in notebooks/."""

from __future__ import annotations

from pathlib import Path

from minimodal.host_memory import keep_freed_memory

__version__ = "0.1.0"
keep_freed_memory()  # XLA's per-step temporaries reused instead of re-mapped each step (host_memory.py)


def load(workdir: str | Path, step: int | None = None):
    """The trained model's pipeline from a work directory alone, from its newest intact checkpoint (or `step`).

    CLIP -> `embed_images(uint8 (N,H,W,3)) -> (N, D)`, `embed_texts(list[str]) -> (N, D)`;
    generators (DALL-E, DDPM) -> `generate(prompts, seed=0, **options) -> uint8 (N, H, W, 3)`.
    """
    from minimodal.train import load_model

    family, model, config, tokenizer = load_model(workdir, step)
    if family.pipeline is None:
        raise ValueError(f"{family.name} models have no pipeline; use minimodal.train.load_model")
    return family.pipeline(model, config, tokenizer, Path(workdir))
