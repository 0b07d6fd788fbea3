"""`minimodal tour --fast`: every stage trains and is measured, the report is written, a re-run resumes."""

from __future__ import annotations

import json

from minimodal import cli


def test_fast_tour_writes_a_report_and_resumes(tmp_path, capsys):
    workdir = tmp_path / "tour"
    assert cli.main(["tour", "--fast", "--workdir", str(workdir)]) == 0
    results = json.loads((workdir / "results.json").read_text())
    assert results["preset"] == "tiny"
    for name in ("dalle", "ddpm"):
        r = results[name]
        assert 0 <= r["fidelity"] <= 1 and 0 <= r["fidelity_holdout"] <= 1 and r["seconds_per_image"] > 0
        assert -1 <= r["clip_score"] <= 1 and (workdir / f"{name}_grid.png").exists()
    assert 0 <= results["clip"]["zero_shot"] <= 1 and 0 <= results["clip"]["zero_shot_holdout"] <= 1
    page = (workdir / "report.html").read_text()
    assert "caption fidelity" in page and 'src="ddpm_strip.png"' in page and 'src="clip_similarity.png"' in page
    capsys.readouterr()
    assert cli.main(["tour", "--fast", "--workdir", str(workdir)]) == 0  # finished stages are skipped
    assert capsys.readouterr().out.count("done earlier, skipping") == 3
