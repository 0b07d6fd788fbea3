"""Every lesson runs top to bottom in fast mode (MINIMODAL_FAST=1, one CPU device); its .ipynb matches its .py
and carries the outputs of a full run of its current code; it ends with what a learner should have seen."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import jupytext
import nbformat
import pytest
from nbclient import NotebookClient
from PIL import Image

from minimodal import publish

NOTEBOOKS = publish.lessons()
ids = [p.stem for p in NOTEBOOKS]


@pytest.mark.parametrize("source", NOTEBOOKS, ids=ids)
def test_notebook_runs_in_fast_mode(source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MINIMODAL_FAST", "1")
    monkeypatch.setenv("MINIMODAL_RUNS", str(tmp_path))  # lessons write their work directories here
    # on the devices a learner's laptop has (one CPU), not make test's 8 forced host devices (unit tests cover
    # those), which make a lesson's fast mode ~1.5x slower
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    notebook = jupytext.read(source)
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors


@pytest.mark.parametrize("source", NOTEBOOKS, ids=ids)
def test_ipynb_is_in_sync_with_py(source: Path):
    ipynb = source.with_suffix(".ipynb")
    assert ipynb.exists(), f"run `make notebooks` to write {ipynb.name}"
    cells = lambda nb: [(c.cell_type, c.source.strip()) for c in nb.cells]  # noqa: E731
    assert cells(nbformat.read(ipynb, as_version=4)) == cells(jupytext.read(source)), \
        f"{ipynb.name} is out of date: run `make notebooks`"


@pytest.mark.parametrize("source", NOTEBOOKS, ids=ids)
def test_ipynb_holds_the_outputs_of_its_current_code(source: Path):
    ipynb = source.with_suffix(".ipynb")
    notebook = nbformat.read(ipynb, as_version=4)
    run = notebook.metadata.get("minimodal", {})
    refresh = f"run `make lessons` (or `python -m minimodal.publish lessons {source.name[:2]}`)"
    assert run.get("mode") == "full" and any(c.get("outputs") for c in notebook.cells), \
        f"{ipynb.name} has no outputs of a full run: {refresh}"
    assert run["code_sha256"] == publish.code_hash(jupytext.read(source)), \
        f"{ipynb.name}'s outputs are stale (its code changed since they were made on {run['executed']}): {refresh}"
    assert ipynb.stat().st_size <= publish.MAX_BYTES, f"{ipynb.name} is over 1 MiB"


@pytest.mark.parametrize("source", NOTEBOOKS, ids=ids)
def test_lesson_ends_with_what_you_should_have_seen(source: Path):
    last = jupytext.read(source).cells[-1]
    assert last.cell_type == "markdown" and last.source.startswith("## What you should have seen"), \
        f"{source.name} should end with a '## What you should have seen' cell giving the numbers of a full run"


def test_code_hash_ignores_prose_and_sees_code():
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# intro"),
                                               nbformat.v4.new_code_cell("x = 1")])
    before = publish.code_hash(notebook)
    notebook.cells[0].source = "# intro, reworded"
    notebook.cells[1].outputs = [nbformat.v4.new_output("stream", text="1\n")]
    assert publish.code_hash(notebook) == before
    notebook.cells[1].source = "x = 2"
    assert publish.code_hash(notebook) != before


def test_train_commands_are_read_from_the_lesson_header():
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(
        "# 04\n\n    minimodal train ddpm --data shapes --workdir runs/ddpm     # then: minimodal eval ddpm\n"
        "    minimodal train clip  --data shapes --workdir runs/clip\n\nprose about minimodal train")])
    assert publish.train_commands(notebook) == ["minimodal train ddpm --data shapes --workdir runs/ddpm",
                                                "minimodal train clip  --data shapes --workdir runs/clip"]


def test_trimming_keeps_a_progress_bar_last_state_cuts_long_outputs_and_shrinks_figures():
    png = io.BytesIO()
    Image.new("RGB", (2 * publish.MAX_WIDTH, 100)).save(png, "PNG")
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("")])
    notebook.cells[0].outputs = [
        nbformat.v4.new_output("stream", name="stderr", text="train:  10%"),
        nbformat.v4.new_output("stream", name="stderr", text="\rtrain:  50%\rtrain: 100%\r\ndone\n"),
        nbformat.v4.new_output("stream", name="stdout", text="".join(f"{i}\n" for i in range(500))),
        nbformat.v4.new_output("display_data", data={"image/png": base64.b64encode(png.getvalue()).decode()})]
    publish.trim_outputs(notebook)
    bar, long, figure = notebook.cells[0].outputs
    assert bar.text == "train: 100%\ndone\n"
    lines = long.text.splitlines()
    assert len(lines) <= publish.MAX_LINES["stdout"] + 1 and "lines cut" in lines[len(lines) // 2]
    assert lines[0] == "0" and lines[-1] == "499"
    assert Image.open(io.BytesIO(base64.b64decode(figure.data["image/png"]))).size == (publish.MAX_WIDTH, 50)
