"""Every lesson runs top to bottom in fast mode (MINIMODAL_FAST=1), and its .ipynb matches its .py."""

from __future__ import annotations

from pathlib import Path

import jupytext
import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("[0-9][0-9]_*.py"))


@pytest.mark.parametrize("source", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_in_fast_mode(source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MINIMODAL_FAST", "1")
    monkeypatch.setenv("MINIMODAL_RUNS", str(tmp_path))  # lessons write their work directories here
    notebook = jupytext.read(source)
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors


@pytest.mark.parametrize("source", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_ipynb_is_in_sync_with_py(source: Path):
    ipynb = source.with_suffix(".ipynb")
    assert ipynb.exists(), f"run `make notebooks` to write {ipynb.name}"
    cells = lambda nb: [(c.cell_type, c.source.strip()) for c in nb.cells]  # noqa: E731
    assert cells(nbformat.read(ipynb, as_version=4)) == cells(jupytext.read(source)), \
        f"{ipynb.name} is out of date: run `make notebooks`"
