"""Publish the lessons: execute them with their outputs (`make lessons`) and render them as HTML (`make site`).

    python -m minimodal.publish lessons [NN ...]   train what each lesson names, run it in full mode, write the .ipynb
    python -m minimodal.publish site [DIR]         notebooks/*.ipynb -> DIR/*.html (default site/), maths offline

The `.py` sources stay the files people edit. An executed notebook records a hash of its code cells
(`metadata.minimodal.code_sha256`), so a test can tell when its outputs no longer match its source.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import html
import io
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

from minimodal.host_memory import run_with_huge_pages

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
MAX_BYTES = 1 << 20  # each executed notebook stays under 1 MiB
MAX_WIDTH = 800  # px: wider figures are downscaled
MAX_LINES = {"stdout": 120, "stderr": 12}  # lines kept of one text output (its first and last halves)
TRAIN_COMMAND = re.compile(r"^\s*(minimodal train [^#\n]*?)\s*(?:#.*)?$", re.M)


def lessons() -> list[Path]:
    """The lesson sources, notebooks/NN_*.py, in reading order."""
    return sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))


def code_hash(notebook) -> str:
    """sha256 of the notebook's code cells (whitespace-trimmed): what its outputs depend on, prose aside."""
    code = "\n# %%\n".join(c.source.strip() for c in notebook.cells if c.cell_type == "code")
    return hashlib.sha256(code.encode()).hexdigest()


def train_commands(notebook) -> list[str]:
    """The `minimodal train ...` commands a lesson's opening cell names: the work directories it expects."""
    return TRAIN_COMMAND.findall(notebook.cells[0].source)


def _trim_text(text: str, max_lines: int) -> str:
    """Progress bars collapsed to their last state (text after the last carriage return), long outputs cut."""
    lines = [line.rstrip("\r").rsplit("\r", 1)[-1] for line in text.split("\n")]
    if len(lines) > max_lines:
        half = max_lines // 2
        lines = [*lines[:half], f"[... {len(lines) - 2 * half} lines cut ...]", *lines[-half:]]
    return "\n".join(line if len(line) <= 400 else line[:400] + " [...]" for line in lines)


def _shrink_png(data: str) -> str:
    """A base64 PNG at most MAX_WIDTH pixels wide."""
    from PIL import Image

    image = Image.open(io.BytesIO(base64.b64decode(data)))
    if image.width <= MAX_WIDTH:
        return data
    size = (MAX_WIDTH, round(image.height * MAX_WIDTH / image.width))
    out = io.BytesIO()
    image.resize(size, Image.LANCZOS).save(out, "PNG", optimize=True)
    return base64.b64encode(out.getvalue()).decode()


def _merge_streams(outputs: list) -> list:
    """Consecutive writes to one stream as one output, as Jupyter shows them (a progress bar is many writes)."""
    merged = []
    for output in outputs:
        previous = merged[-1] if merged else None
        if output.output_type == "stream" and previous is not None and previous.output_type == "stream" \
                and previous.name == output.name:
            previous.text += output.text
        else:
            merged.append(output)
    return merged


def trim_outputs(notebook) -> None:
    """Make the outputs small enough to commit: text trimmed, figures downscaled, timing metadata dropped."""
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        cell.metadata.pop("execution", None)
        cell.outputs = _merge_streams(cell.outputs)
        for output in cell.outputs:
            if output.output_type == "stream":
                output.text = _trim_text(output.text, MAX_LINES[output.name])
            for mime, value in output.get("data", {}).items():
                if mime == "image/png":
                    output.data[mime] = _shrink_png(value)
                elif mime == "text/plain":
                    output.data[mime] = _trim_text(value, MAX_LINES["stdout"])
                output.get("metadata", {}).get(mime, {}).pop("width", None)


def _run(command: list[str]) -> float:
    """Run a command from the repository root, echoing it; its wall time in seconds."""
    print("$", " ".join(command), flush=True)
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True)
    return time.perf_counter() - start


def execute(source: Path) -> float:
    """Run one lesson (in this process's environment) and write its .ipynb with outputs; its wall time in s."""
    import jupytext
    import nbformat
    from nbclient import NotebookClient

    notebook = jupytext.read(source)
    start = time.perf_counter()
    NotebookClient(notebook, timeout=3600, kernel_name="python3", record_timing=False,
                   resources={"metadata": {"path": str(ROOT)}}).execute()
    wall_s = time.perf_counter() - start
    trim_outputs(notebook)
    notebook.metadata["minimodal"] = {"code_sha256": code_hash(notebook), "executed": date.today().isoformat(),
                                      "wall_s": round(wall_s), "mode": "full"}
    target = source.with_suffix(".ipynb")
    nbformat.write(notebook, target)
    size = target.stat().st_size
    if size > MAX_BYTES:
        raise RuntimeError(f"{target.name} is {size / 2**20:.2f} MiB (limit 1 MiB): show fewer or smaller figures")
    return wall_s


def run_lessons(selected: list[str]) -> None:
    """Train (or resume) each lesson's named work directories, then execute the lessons in order, in full mode."""
    import jupytext

    for name in ("MINIMODAL_FAST", "MINIMODAL_RUNS"):  # the kernels inherit this environment; they run in
        os.environ.pop(name, None)  # ROOT, so their work directories are runs/..., where the train commands write
    sources = [s for s in lessons() if not selected or s.name[:2] in selected]
    times = []
    for source in sources:
        for command in train_commands(jupytext.read(source)):
            seconds = _run([sys.executable, "-m", "minimodal", *command.split()[1:]])
            print(f"  {command}: {seconds:.0f} s", flush=True)
        print(f"running {source.name} ...", flush=True)
        seconds = execute(source)
        size = source.with_suffix(".ipynb").stat().st_size
        times.append((source.stem, seconds, size))
        print(f"  {source.stem}: {seconds:.0f} s, {size / 1024:.0f} KiB", flush=True)
    print("\nlesson wall times (full mode):")
    for stem, seconds, size in times:
        print(f"  {stem:28s} {seconds / 60:5.1f} min  {size / 1024:5.0f} KiB")


# nbconvert's lab template, offline: none of the scripts it would fetch from a CDN (require.js, mermaid; the
# lessons need neither), and MathJax 3 from out/mathjax.js: the `tex-svg` build, one file that carries its
# glyphs as SVG paths (web fonts, the other choice, are refused by browsers on file:// pages).
OFFLINE_TEMPLATE = r"""{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block html_head_js_mathjax -%}
<script>window.MathJax = {tex: {inlineMath: [["$", "$"], ["\\(", "\\)"]], processEscapes: true}};</script>
<script src="mathjax.js"></script>
{%- endblock html_head_js_mathjax -%}
"""


def build_site(out: Path) -> None:
    """Every executed lesson as out/NN_name.html plus out/index.html; MathJax copied to out/mathjax.js."""
    import jinja2
    import jupytext
    import mathjax  # the PyPI package django-static-mathjax: MathJax's files, nothing else
    import nbformat
    from nbconvert import HTMLExporter

    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(mathjax.__file__).parent / "static/mathjax/es5/tex-svg.js", out / "mathjax.js")
    exporter = HTMLExporter(template_name="lab", template_file="offline.html.j2",
                            extra_loaders=[jinja2.DictLoader({"offline.html.j2": OFFLINE_TEMPLATE})])
    rows = []
    for source in lessons():
        ipynb = source.with_suffix(".ipynb")  # a lesson not yet executed (or synced) is shown without outputs
        notebook = nbformat.read(ipynb, as_version=4) if ipynb.exists() else jupytext.read(source)
        title = notebook.cells[0].source.splitlines()[0].lstrip("# ").strip()
        body, _ = exporter.from_notebook_node(notebook, resources={"metadata": {"name": title}})
        (out / f"{source.stem}.html").write_text(body, encoding="utf-8")
        run = notebook.metadata.get("minimodal")
        note = "not executed"
        if run:
            took = f"{run['wall_s']} s" if run["wall_s"] < 60 else f"{run['wall_s'] / 60:.1f} min"
            note = f"executed {run['executed']}, {took}"
        rows.append(f'<li><a href="{source.stem}.html">{html.escape(title)}</a> <small>({note})</small></li>')
        print(f"{out / source.stem}.html")
    (out / "index.html").write_text(
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>minimodal lessons</title></head>"
        "<body style='font-family: sans-serif; max-width: 50em; margin: 2em auto'>"
        "<h1>minimodal lessons</h1><ul style='list-style: none'>" + "".join(rows) + "</ul></body></html>\n",
        encoding="utf-8")
    print(out / "index.html")


def main(argv: list[str] | None = None) -> None:
    if argv is None:  # run as a command: its kernels inherit the environment
        run_with_huge_pages()
    parser = argparse.ArgumentParser(prog="python -m minimodal.publish", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("lessons", help="train, execute and write every lesson (or the numbered ones)")
    run.add_argument("numbers", nargs="*", help="lesson numbers, e.g. 02 03 (default: all)")
    site = commands.add_parser("site", help="render the executed lessons as static HTML")
    site.add_argument("out", nargs="?", type=Path, default=ROOT / "site")
    args = parser.parse_args(argv)
    if args.command == "lessons":
        run_lessons(args.numbers)
    else:
        build_site(args.out)


if __name__ == "__main__":
    main()
