"""Tokenizer speed: BPE training and encoding on shapes captions (and on general English text).

    flock /tmp/minimodal-cpu.lock .venv/bin/python bench/bench_tokenizer.py

Prints a markdown table (best of `--repeats`); the recorded figures are in bench/results/tokenizer.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Callable

import numpy as np

from minimodal.tokenizer import Tokenizer


def shapes_captions(n: int, seed: int = 0) -> tuple[list[str], str]:
    """n shapes captions from `minimodal.data.shapes.generate`, or SHAPES.md's templates until it exists."""
    try:
        from minimodal.data.shapes import generate
    except ImportError:
        return template_captions(n, seed), "SHAPES.md templates (minimodal.data.shapes not available)"
    one, two = (generate(n - n // 2, size=16, seed=seed, objects=k)["captions"] for k in (1, 2))
    captions = [c for pair in zip(one, two) for c in pair][:n]  # alternate one- and two-object scenes
    return captions, "minimodal.data.shapes.generate, one- and two-object scenes alternating"


def template_captions(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    colors = ["red", "green", "blue", "yellow", "purple", "white"]
    shapes = ["circle", "square", "triangle", "cross"]
    where = ["at the top left", "at the top", "at the top right", "on the left", "in the center",
             "on the right", "at the bottom left", "at the bottom", "at the bottom right"]
    relations = ["left of", "right of", "above", "below"]

    def thing() -> str:
        size = rng.choice(["", "small ", "large "])
        return f"a {size}{rng.choice(colors)} {rng.choice(shapes)}"

    captions = []
    for _ in range(n):
        if rng.random() < 0.5:
            captions.append(f"{thing()} {rng.choice(where)}" if rng.random() < 0.7 else thing())
        else:
            captions.append(f"{thing()} {rng.choice(relations)} {thing()}")
    return captions


def english_text(max_bytes: int = 1_000_000) -> list[str]:
    """General English prose with code: the docstrings and comments of Python's standard library."""
    import email

    lines = []
    for path in sorted(Path(email.__file__).parent.parent.glob("*.py")):
        lines += path.read_text(encoding="utf-8", errors="replace").splitlines()
        if sum(map(len, lines)) > max_bytes:
            break
    return lines


def best_of(repeats: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="captions to encode")
    parser.add_argument("--n-train", type=int, default=20_000,
                        help="captions to train on (TrainConfig.n_train)")
    parser.add_argument("--vocab-size", type=int, default=384, help="TrainConfig.vocab_size")
    parser.add_argument("--context-length", type=int, default=24, help="TrainConfig.context_length")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    captions, source = shapes_captions(args.n)
    train_texts = captions[:args.n_train]
    rows = []
    seconds = best_of(args.repeats, lambda: Tokenizer.train(train_texts, args.vocab_size))
    tok = Tokenizer.train(train_texts, args.vocab_size)
    rows.append((f"train on {len(train_texts):,} shapes captions, vocab_size={args.vocab_size} "
                 f"(reached {tok.vocab_size})", seconds))

    def encode_cold() -> None:  # a fresh tokenizer: empty word cache
        fresh = Tokenizer(tok.merges)
        for caption in captions:
            fresh.encode(caption)

    rows.append((f"`encode` {len(captions):,} shapes captions one by one, cold word cache",
                 best_of(args.repeats, encode_cold)))
    rows.append((f"`encode_batch` {len(captions):,} shapes captions, T={args.context_length} -> int32 "
                 f"{tok.encode_batch(captions, args.context_length).shape}",
                 best_of(args.repeats,
                         lambda: Tokenizer(tok.merges).encode_batch(captions, args.context_length))))
    n_bytes = sum(len(c.encode()) for c in captions)
    n_tokens = sum(len(tok.encode(c)) for c in captions)

    text = english_text()
    english = Tokenizer.train(text, 2048)
    rows.append((f"train on {sum(map(len, text)) / 1e6:.2f} MB of English + code (stdlib sources), "
                 f"vocab_size=2048", best_of(1, lambda: Tokenizer.train(text, 2048))))
    rows.append((f"`encode_batch` the same {len(text):,} lines, cold word cache, T=64",
                 best_of(args.repeats, lambda: Tokenizer(english.merges).encode_batch(text, 64))))
    text_bytes = sum(len(t.encode()) for t in text)
    text_tokens = sum(len(english.encode(t)) for t in text)

    print(f"captions: {source}\n")
    print("| what | seconds (best of runs) |\n| --- | --- |")
    for what, s in rows:
        print(f"| {what} | {s:.3f} |")
    print(f"\ncompression: shapes {n_bytes / n_tokens:.2f} bytes/token (mean {n_tokens / len(captions):.2f} "
          f"tokens per caption); English+code at 2048: {text_bytes / text_tokens:.2f} bytes/token")


if __name__ == "__main__":
    main()
