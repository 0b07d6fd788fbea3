"""Timing shared by the benchmarks."""

from __future__ import annotations

import time

import jax


def best_of(fn, repeats: int = 3) -> float:
    """Seconds of the fastest of `repeats` calls, after one warm-up call that compiles."""
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return min(times)
