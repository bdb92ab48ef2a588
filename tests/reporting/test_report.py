"""The per-class intensity figure and its place in the summary (medsynth.reporting.plots, medsynth.reporting.summary)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.colors
import numpy as np
import pytest
from PIL import Image

from medsynth.evaluation.class_intensity import INTENSITY_COLUMNS
from medsynth.io.tables import read_tsv, write_tsv
from medsynth.metrics.intensity import class_intensity_table
from medsynth.reporting.plots import FLAG_COLOR, class_intensity_figure, class_intensity_plot
from medsynth.reporting.summary import write_summary

NAMES = ["background", "body", "liver", "spleen", "kidney"]  # kidney is in no image


@pytest.fixture
def intensity_tsv(tmp_path: Path) -> Path:
    """class_intensity.tsv of a generator that paints the liver 300 HU too bright."""
    rng = np.random.default_rng(0)
    labels = np.zeros((4, 24, 24), np.uint8)
    labels[:, 2:22, 2:22], labels[:, 5:12, 4:11], labels[:, 13:20, 12:19] = 1, 2, 3
    real = np.array([-1000.0, -50.0, 60.0, 45.0, 0.0])[labels] + rng.normal(0, 10, labels.shape) * (labels > 0)
    fake = real + 300.0 * (labels == 2)
    rows = [{"unit": "HU", **r} for r in class_intensity_table(fake, labels, real, labels, NAMES)]
    return write_tsv(tmp_path / "class_intensity.tsv", rows, INTENSITY_COLUMNS)


def test_the_figure_marks_the_flagged_class_and_leaves_absent_ones_out(tmp_path: Path, intensity_tsv: Path) -> None:
    png = class_intensity_plot(intensity_tsv, tmp_path / "reports" / "class_intensity.png", dpi=50)
    with Image.open(png) as img:
        assert img.size[0] > 200 and img.size[1] > 100
    fig = class_intensity_figure(read_tsv(intensity_tsv))
    ax = fig.axes[0]
    ticks = {t.get_text(): matplotlib.colors.to_hex(t.get_color()) for t in ax.get_xticklabels()}
    assert list(ticks) == ["background", "body", "liver", "spleen"]
    assert ticks["liver"] == matplotlib.colors.to_hex(FLAG_COLOR)
    assert all(c != ticks["liver"] for name, c in ticks.items() if name != "liver")
    assert ax.get_ylabel() == "HU"
    # The liver's generated median sits 300 HU above the real one (a median spans its box; caps half of it).
    medians = sorted((line.get_xdata()[0], line.get_ydata()[0]) for line in ax.lines
                     if len(line.get_xdata()) == 2 and abs(line.get_xdata()[1] - line.get_xdata()[0]) > 0.3)
    liver = [y for x, y in medians if 1.5 < x < 2.5]
    assert len(liver) == 2 and liver[1] - liver[0] == pytest.approx(300.0, abs=10.0)


def test_the_summary_shows_the_table_with_flagged_rows_highlighted(tmp_path: Path, intensity_tsv: Path) -> None:
    (tmp_path / "selected.json").write_text(json.dumps({"step": 6, "reason": "lowest fid"}))
    metrics = write_tsv(tmp_path / "test_metrics.tsv", [{"metric": "classes_outside_real_range", "mean": 1,
                                                         "std": float("nan"), "n": 4, "note": "liver"}],
                        ["metric", "mean", "std", "n", "note"])
    figure = class_intensity_plot(intensity_tsv, tmp_path / "class_intensity.png", dpi=30)
    md, page = tmp_path / "summary.md", tmp_path / "summary.html"
    write_summary("demo", tmp_path / "selected.json", metrics, {"Per-class intensity": figure}, md, page,
                  class_intensity=intensity_tsv)
    text = md.read_text()
    assert "| classes_outside_real_range | 1 | NA | 4 | liver |" in text
    assert "| **liver** |" in text and "| **True** |" in text and "| body |" in text
    assert "kidney" not in text  # no pixel on either side
    assert "in HU" in text and "![Per-class intensity](class_intensity.png)" in text
    html = page.read_text()
    highlighted = [row for row in html.split("<tr") if "background:#f8d0d0" in row]
    assert len(highlighted) == 1 and "<td>liver</td>" in highlighted[0]


def test_the_summary_prints_a_nan_cell_as_na() -> None:
    """A cell "nan" (a table another tool wrote) is missing like "NA": never printed as a number."""
    from medsynth.reporting.summary import _fmt

    assert _fmt("nan") == _fmt("NA") == "NA" and _fmt("0.123456") == "0.1235" and _fmt("7") == "7"
