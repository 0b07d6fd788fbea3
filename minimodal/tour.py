"""`minimodal tour`: CLIP, an image tokenizer + DALL-E transformer and a DDPM, trained on `shapes` end to end,
measured with the exact grader, and written up as one `report.html` (plus PNGs) in a work directory.

Each stage trains through the one trainer into `WORKDIR/<model>` (so a re-run resumes and a finished stage
is skipped), then measures: CLIP's zero-shot accuracy (in distribution and on held-out colour–shape pairs);
each generator's caption fidelity (colour and shape read back from the pixels), CLIP score, sampling time
per image and training time. Both generators stand on the tour's CLIP: DALL-E keeps the best of 8 samples by it
(`clip_workdir`; one plain sample is graded too), the DDPM reads its text through its text encoder, kept frozen
(`text_from_clip`, `freeze_text`).
In the fast and full tours on a CPU with two or more cores and core pinning (Linux), the two generators train
side by side once CLIP is done, each in its own process pinned to half the cores (`side_by_side`): one of these
small models keeps only about one core busy, so two at once finish together in about 1.3× the time of one
(bench/results/trainer.md, "Two trainings side by side"). The workers are spawned, so a script that calls `run`
needs the usual `if __name__ == "__main__":` guard (`minimodal tour`, `python -m minimodal` and notebooks are fine).
Three modes pick each model's preset (`MODES`): the full tour (`tour` presets, about 15 minutes on a 2-core CPU),
`--fast` (`fast` presets: every model at 16 px and briefly trained, about 5 minutes, and they do learn) and
`--smoke` (`tiny` presets: seconds of training that learn nothing; the tests use it to check the code runs).
"""

from __future__ import annotations

import contextlib
import html
import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import numpy as np

from minimodal import train
from minimodal.clip_guided import one_object_prompts
from minimodal.data import shapes
from minimodal.metrics import caption_fidelity, per_shape_fidelity
from minimodal.viz import film_strip, save_grid

# The prompts every generator draws for the side-by-side grids (the last row is a held-out pair).
GRID_PROMPTS = ["a red circle", "a blue square", "a green triangle", "a yellow cross", "a white circle",
                "a purple square", "a red triangle"]
SAMPLES_PER_PROMPT = 6
FULL_CAPTIONS_SEED = 4242  # renders whose full training-style captions ("a small red circle at the top") are drawn too
# tour mode -> (each model's preset, default images per colour–shape pair for the fidelity figures, fidelity aim)
MODES: dict[str, tuple[str, int, float | None]] = {"full": ("tour", 8, 0.70), "fast": ("fast", 4, 0.60),
                                                   "smoke": ("tiny", 2, None)}


def _seconds_per_image(pipeline: Any, prompts: list[str], batch: int = 16) -> float:
    """Sampling time per image for a batch of `batch` prompts, timed on a second call (the first compiles)."""
    cycled = [prompts[i % len(prompts)] for i in range(2 * batch)]
    pipeline.generate(cycled[:batch], seed=1)
    start = time.perf_counter()
    np.asarray(pipeline.generate(cycled[batch:], seed=0))
    return (time.perf_counter() - start) / batch


def _save_grid(images: np.ndarray, path: Path, ncols: int) -> None:
    """A PNG grid whose tiles are ~128 px whatever the model's image size (16 px DDPM beside 32 px DALL-E)."""
    save_grid(images, path, ncols=ncols, upscale=max(1, 128 // images.shape[1]))


def clip_score(clip: Any, images: np.ndarray, prompts: list[str]) -> float:
    """Mean cosine similarity between each image's and its prompt's CLIP embedding."""
    return float(np.mean(np.sum(clip.embed_images(images) * clip.embed_texts(prompts), axis=-1)))


# ----------------------------------------------------------------------------- stages


def _fit(name: str, preset: str, workdir: Path, **overrides: Any) -> tuple[Any, float]:
    from minimodal.config import override
    from minimodal.models import get_family

    family = get_family(name)
    start = time.perf_counter()
    trained = train.fit(family, override(family.presets[preset], overrides), workdir)
    train.plot_loss(workdir, workdir / "loss.png")
    pipeline = family.pipeline(trained.model, trained.config, trained.tokenizer, workdir)
    return pipeline, time.perf_counter() - start


def stage_clip(workdir: Path, preset: str) -> dict[str, Any]:
    from minimodal.clip_tasks import evaluate_pipeline

    clip, seconds = _fit("clip", preset, workdir / "clip")
    metrics = evaluate_pipeline(clip, n=600)
    _similarity_heatmap(clip, workdir / "clip_similarity.png")
    return {"train_seconds": seconds, "zero_shot": metrics.get("zero_shot_accuracy"),
            "zero_shot_holdout": metrics.get("zero_shot_accuracy_holdout"),
            "temperature": metrics.get("temperature"), "recall@1": metrics.get("image_to_text_recall@1")}


def stage_generator(name: str, workdir: Path, preset: str, per_pair: int) -> dict[str, Any]:
    """Train a generator, then grade its samples. Both stand on the tour's CLIP, as their default presets do on
    one of their own: the DDPM reads its text through CLIP's text encoder, kept as CLIP trained it
    (`text_from_clip`, `freeze_text`; DALL-E 2's idea), and DALL-E keeps the best of 8 samples by CLIP
    (`clip_workdir`; DALL-E 1's), graded beside one plain sample."""
    import minimodal

    clip_dir = str(workdir / "clip")
    overrides = ({"text_from_clip": clip_dir, "freeze_text": True} if name == "ddpm" else {"clip_workdir": clip_dir})
    generator, seconds = _fit(name, preset, workdir / name, **overrides)
    clip = minimodal.load(workdir / "clip")
    prompts, objects = one_object_prompts("train", per_pair)
    per_image = _seconds_per_image(generator, prompts)
    images = np.asarray(generator.generate(prompts, seed=0))
    held_prompts, held_objects = one_object_prompts("holdout", per_pair)
    held = np.asarray(generator.generate(held_prompts, seed=0))
    grid_prompts = [p for p in GRID_PROMPTS for _ in range(SAMPLES_PER_PROMPT)]
    _save_grid(np.asarray(generator.generate(grid_prompts, seed=0)), workdir / f"{name}_grid.png",
               ncols=SAMPLES_PER_PROMPT)
    full = shapes.generate(len(prompts), generator.config.image_size, seed=FULL_CAPTIONS_SEED, split="train")
    out = {"train_seconds": seconds, "fidelity": caption_fidelity(images, objects),
           **per_shape_fidelity(images, objects),
           "fidelity_holdout": caption_fidelity(held, held_objects),
           "fidelity_full_captions": caption_fidelity(np.asarray(generator.generate(full["captions"], seed=0)),
                                                      full["objects"]),
           "clip_score": clip_score(clip, images, prompts), "seconds_per_image": per_image,
           "images_graded": len(images)}
    if name == "dalle":  # the transformer alone: one sample per prompt, no reranking
        one = np.asarray(generator.generate(grid_prompts, seed=0, candidates=1))
        _save_grid(one, workdir / "dalle_one_sample_grid.png", ncols=SAMPLES_PER_PROMPT)
        one = np.asarray(generator.generate(prompts, seed=0, candidates=1))
        out["fidelity_one_sample"] = caption_fidelity(one, objects)
    if name == "ddpm":
        _, trajectory = generator.generate(GRID_PROMPTS[:4], seed=0, return_trajectory=True)
        _save_grid(film_strip(trajectory, frames=10), workdir / "ddpm_strip.png", ncols=10)
    return out


def _similarity_heatmap(clip: Any, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ex = shapes.generate(8, 32, seed=123, split="train")
    sim_NN = clip.embed_images(ex["images"]) @ clip.embed_texts(ex["captions"]).T
    fig, ax = plt.subplots(figsize=(7, 6))
    ax.imshow(sim_NN, cmap="viridis")
    ax.set_xticks(range(8), ex["captions"], rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(8), [f"image {i}" for i in range(8)], fontsize=7)
    ax.set_title("CLIP: cosine similarity of images (rows) and captions (columns)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- the run


def run(workdir: Path, mode: str = "full", per_pair: int | None = None, side_by_side: bool | None = None) -> Path:
    """Run (or resume) every stage in `mode` ("full", "fast" or "smoke"), then write `workdir/report.html`;
    returns its path. `per_pair`: images generated per colour–shape pair for the fidelity figures (default: the
    mode's, 8 / 4 / 2). `side_by_side`: train DALL-E and the DDPM at once on two halves of the cores (None: in
    the fast and full tours where `core_halves` finds them, the smoke tour one after the other; False: one after
    the other)."""
    if mode not in MODES:
        raise ValueError(f"tour mode must be one of {sorted(MODES)}, got {mode!r}")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    preset, default_per_pair, _ = MODES[mode]
    results_file = workdir / "results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    if results.get("preset") not in (None, preset):
        earlier = _mode_of(results)
        raise ValueError(f"{workdir} holds a tour run with preset {results['preset']!r} (the {earlier} tour"
                         + (", which `--fast` ran before 2026-12-03; it is `--smoke` now" if earlier == "smoke" else "")
                         + f"), not this {mode} tour's {preset!r}: delete {workdir} or use another --workdir")
    save = lambda: results_file.write_text(json.dumps(results, indent=2) + "\n")  # noqa: E731
    results["preset"], results["mode"] = preset, mode
    save()
    per_pair = per_pair or default_per_pair
    stages = [("clip", lambda: stage_clip(workdir, preset)),
              ("dalle", lambda: stage_generator("dalle", workdir, preset, per_pair)),
              ("ddpm", lambda: stage_generator("ddpm", workdir, preset, per_pair))]

    def record(i: int, name: str, result: dict[str, Any]) -> None:
        results[name] = result
        save()
        print(f"[{i}/{len(stages)}] {name}: {json.dumps(result)}")

    # side by side where training dominates: the smoke tour's seconds of training are mostly compilation,
    # which two fresh processes on half the cores each do slower than this warm one
    halves = core_halves() if side_by_side or (side_by_side is None and mode != "smoke") else None
    if side_by_side and halves is None:
        raise ValueError("side_by_side=True needs the CPU backend, two or more cores and core pinning (Linux)")
    for i, (name, stage) in enumerate(stages, 1):
        if name in results:
            print(f"[{i}/{len(stages)}] {name}: done earlier, skipping")
            continue
        if name == "dalle" and "ddpm" not in results and halves is not None:
            start = time.perf_counter()
            _generators_side_by_side(workdir, preset, per_pair, halves, record)
            results["side_by_side_seconds"] = time.perf_counter() - start  # spawning and start-up included
            save()
            break
        print(f"[{i}/{len(stages)}] {name}: training and measuring ({preset} preset)")
        start = time.perf_counter()
        result = stage()
        result["stage_seconds"] = time.perf_counter() - start  # training and measuring
        record(i, name, result)
    return write_report(workdir, results)


def core_halves() -> tuple[set[int], set[int]] | None:
    """This process's cores cut into two halves, when the generators can train side by side: the CPU backend,
    two or more cores, and core pinning (`os.sched_setaffinity`, Linux). None: one after the other (a GPU or
    TPU runs one model at a time, and two processes would contend for its memory)."""
    import jax

    if jax.default_backend() != "cpu" or not hasattr(os, "sched_setaffinity"):
        return None
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return None
    first = (len(cores) + 1) // 2  # an odd core to DALL-E, the longer stage
    return set(cores[:first]), set(cores[first:])


def _generators_side_by_side(workdir: Path, preset: str, per_pair: int, halves: tuple[set[int], set[int]],
                             record: Any, stage: Any = None) -> None:
    """DALL-E and the DDPM trained and measured at once (`stage`, default `stage_generator`: a module-level
    function, so that a spawned process can import it), each in a fresh process of its own pinned to one half of
    the cores, its Python output in WORKDIR/<model>.log; `record(i, name, result)` as each finishes. A stage that
    fails (or whose process dies) does not stop the other: both are waited for, the finished one recorded, and
    then every failure is raised together, naming each stage's log."""
    names = ("dalle", "ddpm")
    print(f"[2-3/3] {' and '.join(names)}: training and measuring side by side ({preset} preset, cores "
          + " and ".join(",".join(map(str, sorted(h))) for h in halves)
          + f"; progress in {', '.join(str(workdir / f'{n}.log') for n in names)})", flush=True)
    stage, spawn = stage or stage_generator, multiprocessing.get_context("spawn")
    pools = {name: ProcessPoolExecutor(1, mp_context=spawn) for name in names}  # one each: a death stays its own
    failures = []
    try:
        futures = {pools[name].submit(_stage_pinned, stage, name, str(workdir), preset, per_pair, cores): name
                   for name, cores in zip(names, halves)}
        for future in as_completed(futures):
            name = futures[future]
            try:
                result = future.result()
            except BrokenProcessPool:
                failures.append(f"the {name} stage's process died (killed by the system? out of memory?); "
                                f"its output: {workdir / f'{name}.log'}")
                continue
            except BaseException as error:  # noqa: BLE001 - every stage's failure is reported below
                failures.append(f"the {name} stage failed (its output: {workdir / f'{name}.log'}): "
                                f"{type(error).__name__}: {error}")
                continue
            record(2 + names.index(name), name, result)
    finally:
        for pool in pools.values():
            pool.shutdown(wait=True, cancel_futures=True)
    if failures:
        raise RuntimeError("; ".join(failures))


def _stage_pinned(stage: Any, name: str, workdir: str, preset: str, per_pair: int,
                  cores: set[int]) -> dict[str, Any]:
    """`stage(name, workdir, preset, per_pair)` in a worker process pinned to `cores` (before XLA starts its
    threads), Python's output (`sys.stdout`, `sys.stderr`: progress bars, prints) going to WORKDIR/<name>.log."""
    os.sched_setaffinity(0, cores)
    with open(Path(workdir) / f"{name}.log", "w") as log, contextlib.redirect_stdout(log), \
            contextlib.redirect_stderr(log):
        start = time.perf_counter()
        result = stage(name, Path(workdir), preset, per_pair)
    result["stage_seconds"] = time.perf_counter() - start
    return result


def _mode_of(results: dict[str, Any]) -> str:
    """The mode of a results.json (older ones name only the preset)."""
    return results.get("mode") or {p: m for m, (p, _, _) in MODES.items()}.get(results.get("preset"), "full")


def _pct(x: Any) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


# What each mode's report says the full tour adds (figures: README, "The tour").
MODE_NOTES = {
    "full": "",
    "fast": "This is the <b>fast tour</b>: every model at 16 px with short training (about 5 minutes on a 2-core "
            "CPU). <code>make tour</code> trains the <code>tour</code> presets instead (DALL-E at 32 px, about 15 "
            "minutes), and each model's default preset trains longer still: see the README for what they reach.",
    "smoke": "This is the <b>smoke tour</b>: seconds of training per model, which checks that every stage runs and "
             "learns nothing (expect noise and chance-level figures). <code>make tour-fast</code> (about 5 "
             "minutes) and <code>make tour</code> (about 15) train models that learn.",
}


def write_report(workdir: Path, results: dict[str, Any]) -> Path:
    """One self-contained HTML page (images by relative path) with the tour's table and pictures."""
    clip, gens = results.get("clip", {}), {k: results[k] for k in ("dalle", "ddpm") if k in results}
    mode = _mode_of(results)
    aim = MODES[mode][2]

    def fidelity(r: dict[str, Any]) -> str:
        short = "" if aim is None or r["fidelity"] >= aim else f" (below the {aim:.0%} aim)"
        return _pct(r["fidelity"]) + short

    rows = "".join(
        f"<tr><td>{name}</td><td>{fidelity(r)}</td>"
        + "".join(f"<td>{_pct(r.get(f'fidelity_{shape}'))}</td>" for shape in shapes.SHAPES)
        + f"<td>{_pct(r.get('fidelity_full_captions'))}</td><td>{_pct(r.get('fidelity_one_sample'))}</td>"
        f"<td>{_pct(r['fidelity_holdout'])}</td><td>{r['clip_score']:.3f}</td>"
        f"<td>{1000 * r['seconds_per_image']:.1f} ms</td><td>{r['train_seconds'] / 60:.1f} min</td></tr>"
        for name, r in gens.items())
    pictures = [(f"{n}_grid.png", f"{n}: {SAMPLES_PER_PROMPT} samples per prompt"
                 + (", each the best of 8 by CLIP" if n == "dalle" else "") + " (rows: "
                 + ", ".join(GRID_PROMPTS) + "; the last row is a held-out pair)") for n in gens]
    pictures += [("dalle_one_sample_grid.png", "DALL-E's transformer alone: one sample per image, no reranking"),
                 ("ddpm_strip.png", "DDPM: the denoising trajectory, noise to image, left to right"),
                 ("clip_similarity.png", "CLIP: image–caption similarity"),
                 ("clip/loss.png", "CLIP loss"), ("dalle/loss.png", "DALL-E transformer loss"),
                 ("dalle/image_tokenizer/loss.png", "image tokenizer loss"), ("ddpm/loss.png", "DDPM loss")]
    figures = "".join(f'<figure><img src="{src}"><figcaption>{html.escape(cap)}</figcaption></figure>'
                      for src, cap in pictures if (workdir / src).exists())
    note = f"<p>{MODE_NOTES[mode]}</p>" if MODE_NOTES[mode] else ""
    stage_times = {name: results[name]["stage_seconds"] for name in ("clip", "dalle", "ddpm")
                   if "stage_seconds" in results.get(name, {})}
    if stage_times:
        side = "side_by_side_seconds" in results  # the two generators' wall time, measured around both
        total = sum(t for name, t in stage_times.items() if not (side and name in ("dalle", "ddpm")))
        total += results["side_by_side_seconds"] if side else 0.0
        note += (f"<p>This run took <b>{total / 60:.1f} min</b> (training and measuring: "
                 + ", ".join(f"{name} {results[name]['stage_seconds'] / 60:.1f}" for name in ("clip", "dalle", "ddpm")
                             if "stage_seconds" in results.get(name, {})) + " min"
                 + ("; DALL-E and the DDPM side by side, each on half the cores" if side else "") + ").</p>")
    shape_headers = "".join(f"<th>{shape}</th>" for shape in shapes.SHAPES)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>minimodal tour</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}
td,th{{padding:4px 10px;border-bottom:1px solid #ddd}}
img{{image-rendering:pixelated;max-width:100%}}figure{{display:inline-block;margin:1em}}</style></head><body>
<h1>minimodal tour ({html.escape(mode)}: {html.escape(results.get('preset', ''))} presets)</h1>{note}
<p>Everything below was trained from scratch on the procedural <code>shapes</code> data on this machine, and graded
by reading colour and shape back from the generated pixels. Caption fidelity is measured on prompts as people type
them ("a red circle": every train colour–shape pair alike), per shape, and on full training-style captions ("a small
red circle at the top left"). Both generators stand on the CLIP trained first: DALL-E draws 8 samples per prompt and
keeps the one CLIP scores best (DALL-E's own recipe; one plain sample is graded too), and the DDPM reads the prompt
through CLIP's text encoder (DALL-E 2's idea), kept as CLIP trained it.</p>
<h2>Generators</h2><table><tr><th>model</th><th>caption fidelity ("a red circle")</th>{shape_headers}
<th>full captions</th><th>one sample, no reranking</th>
<th>held-out pairs</th><th>CLIP score</th><th>sampling / image</th><th>training</th></tr>{rows}</table>
<h2>CLIP</h2><table><tr><th>zero-shot (24-way)</th><th>held-out pairs</th><th>temperature</th><th>training</th></tr>
<tr><td>{_pct(clip.get('zero_shot'))}</td><td>{_pct(clip.get('zero_shot_holdout'))}</td>
<td>{clip.get('temperature', 0):.4f}</td><td>{clip.get('train_seconds', 0) / 60:.1f} min</td></tr></table>
<h2>Pictures</h2>{figures}</body></html>"""
    out = workdir / "report.html"
    out.write_text(page)
    return out
