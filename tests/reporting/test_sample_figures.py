"""The report's sample pictures when a test case has no slice (slice.require_classes kept none of it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from medsynth.data.slicing import CaseSlices
from medsynth.reporting.sample_figures import NOTHING, SampleFigures, sample_figures

SIZE = 16


def _case(root: Path, case_id: str, n: int) -> tuple[str, Path, Path]:
    labels = np.zeros((n, SIZE, SIZE), np.uint8)
    labels[:, 4:12, 4:12] = 1
    images = np.where(labels > 0, 0.3, -1.0).astype(np.float32)
    real = CaseSlices(images, labels, (labels > 0).astype(np.uint8), np.arange(n, dtype=np.int32),
                      np.zeros((n, 2), np.int32)).save(root / "real" / case_id / "slices.npz")
    (root / "gen" / case_id).mkdir(parents=True)
    np.savez(root / "gen" / case_id / "samples.npz", samples=np.stack([images, images]).astype(np.float16),
             z=np.arange(n, dtype=np.int32))
    return case_id, real, root / "gen" / case_id / "samples.npz"


def _out(root: Path) -> SampleFigures:
    return SampleFigures(root / "grid.png", root / "strip.png", root / "side.png")


def test_a_case_without_slices_is_left_out_of_every_picture(tmp_path: Path) -> None:
    """The empty case sorts first: it would have been the strip's case and the side views' first row."""
    cases = [_case(tmp_path, "a_empty", 0), _case(tmp_path, "b_case", 6)]
    spacings = {"a_empty": [2.0, 2.0, 4.0], "b_case": [2.0, 2.0, 4.0]}
    out = sample_figures(cases, 2, spacings, _out(tmp_path), rows=3, dpi=40)
    sizes = {name: Image.open(path).size for name, path in out._asdict().items()}
    assert all(w > 100 and h > 50 for w, h in sizes.values()), sizes


def test_no_case_with_slices_gives_pictures_that_say_so(tmp_path: Path) -> None:
    out = sample_figures([_case(tmp_path, "a_empty", 0)], 2, {"a_empty": [2.0, 2.0, 4.0]}, _out(tmp_path),
                         rows=3, dpi=40)
    from medsynth.io.figures import message_figure

    said = np.asarray(Image.open(message_figure(tmp_path / "said.png", NOTHING, dpi=40)))
    for path in out:
        assert np.array_equal(np.asarray(Image.open(path)), said), path


def test_the_grid_reads_only_the_cases_it_shows(tmp_path: Path) -> None:
    """A test set of 40 cases, a grid of 3 rows: 3 cases read. (It read all of them and kept each whole
    through views of its arrays: ~31 GB on the login node for AutoPET's test split.)"""
    cases = [_case(tmp_path, f"c{i:02d}", 6) for i in range(40)]
    for _, _, gen in cases[3:]:  # a case beyond the grid's that were read would fail the figure
        gen.write_bytes(b"not an npz")
    out = sample_figures(cases, 2, {c[0]: [2.0, 2.0, 4.0] for c in cases}, _out(tmp_path), rows=3, dpi=40)
    assert Image.open(out.grid).size[1] > 100
