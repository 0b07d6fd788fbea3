"""The lessons' shared set-up: which preset and work directory a notebook picks."""

from __future__ import annotations

import pytest

from minimodal import lessons


@pytest.mark.parametrize("fast, big, expected", [(True, True, "tiny"), (True, False, "tiny"),
                                                 (False, True, "gpu"), (False, False, "tour")])
def test_preset_fast_mode_wins_then_the_accelerator(monkeypatch, fast, big, expected):
    monkeypatch.setattr(lessons, "FAST", fast)
    monkeypatch.setattr(lessons, "BIG", big)
    assert lessons.preset(cpu="tour") == expected


def test_only_the_default_preset_shares_the_cli_work_directory(monkeypatch, tmp_path):
    monkeypatch.setattr(lessons, "RUNS", tmp_path)
    assert lessons.workdir("dalle", "default") == tmp_path / "dalle"  # what `minimodal train dalle` writes
    assert lessons.workdir("dalle", "tiny") == tmp_path / "dalle_tiny"
