"""The body mask on MR: noisy air (Rician) and a bias field must not put a band of air into it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medsynth.data.geometry import resample_to_grid, to_canonical
from medsynth.data.labels import LabelTable
from medsynth.data.phantom import PHANTOM_LABELS, make_case
from medsynth.data.preprocess import PreprocessSettings, preprocess_case
from medsynth.io.nifti import load_volume, save_volume

TABLE = LabelTable.from_config([{"name": n, "values": [v]} for v, n in sorted(PHANTOM_LABELS.items())])
# The demo's source grid (1.5 mm, a 384 mm field of view), fewer slices.
SHAPE, SPACING = (256, 256, 6), (1.5, 1.5, 3.0)


@pytest.mark.parametrize("spacing_xy", [None, 6.0], ids=["source grid", "demo grid"])
@pytest.mark.parametrize("index", [0, 1], ids=["stored RAS", "stored LPS"])
def test_mr_mask_holds_almost_no_air(tmp_path: Path, index: int, spacing_xy: float | None) -> None:
    case = make_case(index, seed=1, shape=SHAPE, spacing=SPACING)
    save_volume(tmp_path / "mr.nii.gz", case.mr, case.affine)
    save_volume(tmp_path / "label.nii.gz", case.label, case.affine)
    preprocess_case("c", tmp_path / "mr.nii.gz", tmp_path / "label.nii.gz", tmp_path / "pre", TABLE,
                    PreprocessSettings("MR", spacing_xy))
    mask = load_volume(tmp_path / "pre" / "mask.nii.gz", np.uint8)
    # The phantom's labels cover the whole body: a mask voxel without a source label is air.
    # (The source map, not the preprocessed one: preprocessing gives unlabelled body voxels the body class.)
    label_c, affine_c = to_canonical(case.label, case.affine)
    label = resample_to_grid(label_c, affine_c, mask.affine, mask.array.shape, order=0)
    mask = mask.array > 0
    air = np.count_nonzero(mask & (label == 0)) / np.count_nonzero(mask)
    assert air <= 0.03, f"{air:.1%} of the MR body mask is air"
    assert np.count_nonzero(~mask & (label > 0)) <= 0.001 * np.count_nonzero(label > 0)
