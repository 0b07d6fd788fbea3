"""Test order: the longest tests first, so that `make test`'s workers (pytest-xdist, `-n auto`) finish together
instead of one running a lesson alone at the end (longest-first is the classic greedy schedule).

Each entry is a node-id prefix, longest first by their times alone on the 2-core CPU (2026-12-04: the smoke tour
~100 s, lessons 00, 05 and 04 89, 75 and 65 s, lesson 07 35–40 s; every other test under 40 s).
"""

from __future__ import annotations

import pytest

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
