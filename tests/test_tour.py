"""`minimodal tour --smoke`: every stage trains and is measured, the report is written, a re-run resumes."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from minimodal import cli, tour
from minimodal.train import load_model


def test_smoke_tour_writes_a_report_and_resumes(tmp_path, capsys):
    workdir = tmp_path / "tour"
    assert cli.main(["tour", "--smoke", "--workdir", str(workdir)]) == 0
    results = json.loads((workdir / "results.json").read_text())
    assert (results["preset"], results["mode"]) == ("tiny", "smoke")
    for name in ("dalle", "ddpm"):
        r = results[name]
        assert 0 <= r["fidelity"] <= 1 and 0 <= r["fidelity_holdout"] <= 1 and r["seconds_per_image"] > 0
        assert all(0 <= r[f"fidelity_{shape}"] <= 1 for shape in ("circle", "square", "triangle", "cross"))
        assert 0 <= r["fidelity_full_captions"] <= 1 and -1 <= r["clip_score"] <= 1
        assert (workdir / f"{name}_grid.png").exists()
    assert 0 <= results["clip"]["zero_shot"] <= 1 and 0 <= results["clip"]["zero_shot_holdout"] <= 1
    page = (workdir / "report.html").read_text()
    assert "smoke tour" in page and "This run took" in page
    for name in ("dalle", "ddpm"):  # the row shows what results.json holds
        r = results[name]
        assert f"<td>{name}</td><td>{100 * r['fidelity']:.1f}%" in page
        assert f"<td>{100 * r['fidelity_full_captions']:.1f}%</td>" in page
    assert 'src="ddpm_strip.png"' in page and 'src="clip_similarity.png"' in page
    assert "side_by_side_seconds" not in results  # the smoke tour: one after the other (it is mostly compiling)
    capsys.readouterr()
    assert cli.main(["tour", "--smoke", "--workdir", str(workdir)]) == 0  # finished stages are skipped
    assert capsys.readouterr().out.count("done earlier, skipping") == 3

    # `minimodal eval` of the tour's DALL-E grades full captions and typed prompts, per shape and held out,
    # plainly sampled and (given a CLIP) reranked
    family, model, config, tokenizer = load_model(workdir / "dalle")
    config = dataclasses.replace(config, eval_n=12, candidates=2, clip_workdir=str(workdir / "clip"))
    graded = family.evaluate(model, config, tokenizer, workdir / "dalle")
    typed = {"fidelity_typed", "size_typed", "fidelity_typed_holdout", "fidelity_typed_cross"}
    assert {"fidelity", "fidelity_holdout", "fidelity_rerank", "fidelity_holdout_rerank"} <= set(graded)
    assert typed | {key + "_rerank" for key in typed} <= set(graded)
    assert all(0 <= value <= 1 for value in graded.values() if value == value)  # size_typed may be NaN


def _toy_stage(name, workdir, preset, per_pair):
    """A stand-in for `tour.stage_generator` (module level: the spawned workers import it)."""
    print(f"training {name} ({preset}, {per_pair} per pair)")
    print(f"progress of {name}", file=sys.stderr)
    if name == "ddpm" and preset == "broken":
        raise ValueError("the ddpm stage broke")
    if name == "ddpm" and preset == "killed":
        os._exit(9)  # the process dies, as if the system killed it
    return {"pid": os.getpid(), "cores": sorted(os.sched_getaffinity(0))}


@pytest.mark.skipif(tour.core_halves() is None, reason="needs the CPU backend, 2+ cores and os.sched_setaffinity")
def test_generators_side_by_side_run_pinned_in_their_own_processes(tmp_path):
    halves = tour.core_halves()
    recorded = {}
    record = lambda i, name, result: recorded.update({name: (i, result)})  # noqa: E731
    tour._generators_side_by_side(tmp_path, "fast", 4, halves, record, stage=_toy_stage)
    assert set(recorded) == {"dalle", "ddpm"} and (recorded["dalle"][0], recorded["ddpm"][0]) == (2, 3)
    for (_, result), cores in zip((recorded["dalle"], recorded["ddpm"]), halves):
        assert result["pid"] != os.getpid() and result["cores"] == sorted(cores) and result["stage_seconds"] >= 0
    assert recorded["dalle"][1]["pid"] != recorded["ddpm"][1]["pid"]
    assert (tmp_path / "dalle.log").read_text() == "training dalle (fast, 4 per pair)\nprogress of dalle\n"
    for preset, message in [("broken", r"the ddpm stage failed \(its output: .*ddpm\.log\): ValueError: the ddpm "
                                       r"stage broke"),
                            ("killed", r"the ddpm stage's process died .*; its output: .*ddpm\.log")]:
        recorded.clear()
        with pytest.raises(RuntimeError, match=message):
            tour._generators_side_by_side(tmp_path, preset, 4, halves, record, stage=_toy_stage)
        assert set(recorded) == {"dalle"}  # the other stage finished and kept its result


def test_run_trains_the_generators_side_by_side_where_it_can_and_reports_the_wall_time(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(tour, "stage_clip", lambda workdir, preset: {"zero_shot": 1.0})
    monkeypatch.setattr(tour, "stage_generator",
                        lambda name, workdir, preset, per_pair: calls.append(name) or _toy_result())
    monkeypatch.setattr(tour, "write_report", lambda workdir, results: workdir / "report.html")

    def side_by_side(workdir, preset, per_pair, halves, record):
        calls.append(("side by side", halves))
        record(2, "dalle", {**_toy_result(), "stage_seconds": 60.0})
        record(3, "ddpm", {**_toy_result(), "stage_seconds": 50.0})

    monkeypatch.setattr(tour, "_generators_side_by_side", side_by_side)
    monkeypatch.setattr(tour, "core_halves", lambda: ({0}, {1}))
    tour.run(tmp_path / "a", mode="fast")
    results = json.loads((tmp_path / "a" / "results.json").read_text())
    assert calls == [("side by side", ({0}, {1}))] and results["side_by_side_seconds"] >= 0
    calls.clear()
    tour.run(tmp_path / "b", mode="smoke")  # the smoke tour: one after the other
    assert calls == ["dalle", "ddpm"]
    calls.clear()
    del results["ddpm"]  # a resumed run with DALL-E done: the DDPM alone, in this process
    (tmp_path / "a" / "results.json").write_text(json.dumps(results))
    tour.run(tmp_path / "a", mode="fast")
    assert calls == ["ddpm"]
    monkeypatch.setattr(tour, "core_halves", lambda: None)
    with pytest.raises(ValueError, match="side_by_side=True needs the CPU backend"):
        tour.run(tmp_path / "c", mode="fast", side_by_side=True)
    calls.clear()
    tour.run(tmp_path / "d", mode="fast")  # no halves (a GPU, one core, no pinning): one after the other
    assert calls == ["dalle", "ddpm"]


def _toy_result():
    return {"fidelity": 0.5, "fidelity_holdout": 0.5, "clip_score": 0.5, "seconds_per_image": 0.01,
            "train_seconds": 1.0}


def test_the_report_counts_side_by_side_generators_once(tmp_path):
    results = {"preset": "fast", "mode": "fast", "clip": {"stage_seconds": 60.0},
               "dalle": {**_toy_result(), "stage_seconds": 240.0}, "ddpm": {**_toy_result(), "stage_seconds": 200.0}}
    assert "This run took <b>8.3 min</b>" in tour.write_report(tmp_path, results).read_text()  # 60 + 240 + 200 s
    results["side_by_side_seconds"] = 250.0
    page = tour.write_report(tmp_path, results).read_text()
    assert "This run took <b>5.2 min</b>" in page and "side by side" in page  # 60 + 250 s


def test_a_tour_refuses_an_unknown_mode_and_another_modes_workdir(tmp_path):
    with pytest.raises(ValueError, match=r"tour mode must be one of \['fast', 'full', 'smoke'\], got 'quick'"):
        tour.run(tmp_path, mode="quick")
    (tmp_path / "results.json").write_text(json.dumps({"preset": "tiny"}))  # what `--fast` wrote before modes
    with pytest.raises(ValueError, match=r"preset 'tiny' \(the smoke tour, which `--fast` ran before 2026-12-03; "
                                         r"it is `--smoke` now\), not this fast tour's 'fast': delete "):
        tour.run(tmp_path, mode="fast")
    with pytest.raises(SystemExit):
        cli.main(["tour", "--fast", "--smoke", "--workdir", str(tmp_path)])


@pytest.mark.parametrize("mode", ["full", "fast", "smoke"])
def test_every_tour_mode_names_presets_that_fit_together(mode):
    """Each mode's preset exists for every model it trains, DALL-E's tokenizer preset too, and the DDPM can take
    the tour CLIP's text encoder (`text_from_clip` checks these keys when it loads it)."""
    from minimodal import clip, dalle, ddpm, tour, vqvae

    preset = tour.MODES[mode][0]
    clip_config, dalle_config, ddpm_config = clip.PRESETS[preset], dalle.PRESETS[preset], ddpm.PRESETS[preset]
    assert dalle_config.tokenizer_preset in vqvae.PRESETS
    assert (ddpm_config.context_length, ddpm_config.text_dim, ddpm_config.text_depth, ddpm_config.text_heads) == (
        clip_config.context_length, clip_config.text_width, clip_config.text_depth, clip_config.text_heads)
    assert (ddpm_config.n_train, ddpm_config.seed, ddpm_config.vocab_size) == (
        clip_config.n_train, clip_config.seed, clip_config.vocab_size)  # the same captions: the same tokenizer
    if mode == "fast":
        assert {clip_config.image_size, dalle_config.image_size, ddpm_config.image_size} == {16}


def test_tour_picture_sets_the_two_grids_side_by_side(tmp_path):
    """docs/tour_picture.py (the README's top picture): DALL-E's grid, a white gap, the DDPM's grid, top-aligned."""
    import importlib.util

    from PIL import Image

    script = Path(__file__).parents[1] / "docs" / "tour_picture.py"
    spec = importlib.util.spec_from_file_location("tour_picture", script)
    picture = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(picture)
    dalle_grid, ddpm_grid = np.full((6, 4, 3), 10, np.uint8), np.full((5, 3, 3), 200, np.uint8)
    Image.fromarray(dalle_grid).save(tmp_path / "dalle_grid.png")
    with pytest.raises(FileNotFoundError, match="ddpm_grid.png"):
        picture.compose(tmp_path)
    Image.fromarray(ddpm_grid).save(tmp_path / "ddpm_grid.png")
    canvas = picture.compose(tmp_path)
    assert canvas.shape == (6, 4 + picture.GAP + 3, 3)
    np.testing.assert_array_equal(canvas[:, :4], dalle_grid)
    assert (canvas[:, 4:4 + picture.GAP] == 255).all() and (canvas[5:, 4 + picture.GAP:] == 255).all()
    np.testing.assert_array_equal(canvas[:5, 4 + picture.GAP:], ddpm_grid)
