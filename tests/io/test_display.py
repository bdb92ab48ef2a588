"""Pictures follow the radiological convention: the patient's right on the screen's left, anterior up.

Checked where it matters, on anatomy: the real CT in ../shared/data (TotalSegmentator
labels, liver at world x = +64 mm) and the phantom, both through preprocessing,
slicing and ``display_view`` as every PNG and figure of the pipeline is drawn.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medsynth.data.labels import LabelTable
from medsynth.data.phantom import PHANTOM_LABELS, make_case
from medsynth.io.images import display_view
from medsynth.io.nifti import save_volume

TS_LIVER, TS_VERTEBRAE = 5, range(26, 51)


def _centroid(views: np.ndarray, classes) -> tuple[float, float]:
    """(row, column) centre of the given classes over all displayed slices, as fractions of the screen."""
    _, rows, cols = np.nonzero(np.isin(views, list(classes)))
    return rows.mean() / views.shape[1], cols.mean() / views.shape[2]


def test_real_ct_liver_on_the_screens_left_and_spine_at_the_bottom(tmp_path: Path, real_ct, slice_volumes) -> None:
    ct, label, table = real_ct
    slices = slice_volumes(tmp_path / "pre", ct, label, table, "CT", 128)
    views = np.stack([display_view(s) for s in slices.labels])
    liver = [table.values.index((TS_LIVER,))]
    spine = [table.values.index((v,)) for v in TS_VERTEBRAE if (v,) in table.values]
    liver_row, liver_col = _centroid(views, liver)
    spine_row, spine_col = _centroid(views, spine)
    assert liver_col < 0.4  # the patient's right on the screen's left
    assert spine_row > 0.55 and spine_row > liver_row  # posterior at the bottom, anterior up
    assert 0.4 < spine_col < 0.6


@pytest.mark.parametrize("index", [0, 1], ids=["stored RAS", "stored LPS"])
def test_phantom_liver_is_where_the_real_ct_has_it(tmp_path: Path, index: int, slice_volumes) -> None:
    case = make_case(index, seed=0, shape=(96, 96, 16), spacing=(4.0, 4.0, 6.0))
    save_volume(tmp_path / "ct.nii.gz", case.ct, case.affine)
    save_volume(tmp_path / "label.nii.gz", case.label, case.affine)
    liver_world_x = (case.affine @ np.c_[np.argwhere(case.label == 3), np.ones((case.label == 3).sum())].T)[0]
    assert liver_world_x.mean() > 0  # RAS+: the patient's right
    table = LabelTable.from_config([{"name": n, "values": [v]} for v, n in sorted(PHANTOM_LABELS.items())])
    slices = slice_volumes(tmp_path / "pre", tmp_path / "ct.nii.gz", tmp_path / "label.nii.gz", table, "CT", 96)
    views = np.stack([display_view(s) for s in slices.labels])
    liver_row, liver_col = _centroid(views, [3])
    spleen_row, spleen_col = _centroid(views, [4])
    bone_row, _ = _centroid(views, [7])
    assert liver_col < 0.4 < 0.6 < spleen_col
    assert bone_row > 0.5
