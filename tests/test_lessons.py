"""The lessons' shared set-up: which preset and work directory a notebook picks."""

from __future__ import annotations

import numpy as np
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


def test_show_draws_one_labelled_panel_per_image_and_checks_the_label_count(monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drawn = []
    monkeypatch.setattr(plt, "show", lambda: drawn.append(plt.gcf()))
    images = np.zeros((5, 8, 8, 3), np.uint8)
    lessons.show(images, "grid")
    lessons.show(images, "labelled", ncols=3, labels=list("abcde"))
    grid, panels = drawn
    assert len(grid.axes) == 1
    assert len(panels.axes) == 6 and [ax.get_title() for ax in panels.axes[:5]] == list("abcde")
    with pytest.raises(ValueError, match="2 labels for 5 images"):
        lessons.show(images, labels=["a", "b"])
    plt.close("all")
