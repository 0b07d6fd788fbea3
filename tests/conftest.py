"""Test order: the longest tests first, so that `make test`'s workers (pytest-xdist, `-n auto`) finish together
instead of one running a lesson alone at the end (longest-first is the classic greedy schedule).

Each entry is a node-id prefix, longest first by their times alone on the 2-core CPU (2026-12-04: the smoke tour
~100 s, lessons 00, 05 and 04 89, 75 and 65 s, lesson 07 35–40 s; every other test under 40 s).
"""

from __future__ import annotations

import jax
import pytest

# The tests compare against closed forms and naive implementations at float32 tolerances. On a GPU, XLA's default
# float32 matrix product runs in TF32 (a 10-bit mantissa, relative error ~1e-3), which those comparisons are
# not about: the tests ask for full float32 products (a no-op on the CPU). Outside the tests (`minimodal train`,
# `sample`, the lessons) the default stays; inside them, the tests that train on a GPU run at full precision too.
jax.config.update("jax_default_matmul_precision", "highest")

LONGEST_FIRST = [
    "tests/test_tour.py::test_smoke_tour",
    "tests/test_notebooks.py::test_notebook_runs_in_fast_mode[00",
    "tests/test_notebooks.py::test_notebook_runs_in_fast_mode[05",
    "tests/test_notebooks.py::test_notebook_runs_in_fast_mode[04",
    "tests/test_notebooks.py::test_notebook_runs_in_fast_mode[08",
    "tests/test_notebooks.py::test_notebook_runs_in_fast_mode[06",
    "tests/test_notebooks.py::test_notebook_runs_in_fast_mode[03",
    "tests/test_notebooks.py::test_notebook_runs_in_fast_mode[02",
    "tests/test_notebooks.py::test_notebook_runs_in_fast_mode[07",
]


def _rank(item: pytest.Item) -> int:
    return next((i for i, prefix in enumerate(LONGEST_FIRST) if item.nodeid.startswith(prefix)), len(LONGEST_FIRST))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=_rank)  # stable: every other test keeps its place
