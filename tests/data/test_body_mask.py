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


@pytest.mark.parametrize("source_mm", [3.0, 2.0])  # the mask found on the source grid / on the coarser training grid
def test_arms_apart_from_the_trunk_stay_body_where_their_bones_are_labelled(tmp_path: Path, source_mm: float) -> None:
    """Arms down at the sides, 2 cm of air from the trunk (abdominal, trauma, PET/CT): with the largest
    component alone their tissue became air in the training image, around labelled humeri floating in it."""
    n = int(round(528 / source_mm))
    x = (np.arange(n) - n / 2 + 0.5) * source_mm
    X, Y = np.meshgrid(x, x, indexing="ij")
    hu, lab = np.full((n, n), -1000, np.int16), np.zeros((n, n), np.uint8)
    hu[(X / 160) ** 2 + (Y / 110) ** 2 <= 1] = 40
    lab[(X / 60) ** 2 + (Y / 50) ** 2 <= 1] = 1
    for side in (-1, 1):
        hu[((X - side * 215) / 35) ** 2 + (Y / 40) ** 2 <= 1] = 40
        bone = ((X - side * 215) / 12) ** 2 + (Y / 12) ** 2 <= 1
        hu[bone], lab[bone] = 700, 2
    table = LabelTable.from_config([{"name": "background", "values": [0]}, {"name": "liver", "values": [1]},
                                    {"name": "humerus", "values": [2]}])
    affine = np.diag([source_mm, source_mm, 5.0, 1.0])
    save_volume(tmp_path / "ct.nii.gz", np.repeat(hu[..., None], 4, 2), affine)
    save_volume(tmp_path / "label.nii.gz", np.repeat(lab[..., None], 4, 2), affine)
    meta = preprocess_case("arms", tmp_path / "ct.nii.gz", tmp_path / "label.nii.gz", tmp_path / "out", table,
                           PreprocessSettings("CT", spacing_xy=3.0))
    mask = load_volume(tmp_path / "out" / "mask.nii.gz").array[:, :, 1] > 0
    image = load_volume(tmp_path / "out" / "image.nii.gz").array[:, :, 1]
    g = (np.arange(mask.shape[0]) - mask.shape[0] / 2 + 0.5) * 3.0
    GX, GY = np.meshgrid(g, g, indexing="ij")
    for side in (-1, 1):
        arm_soft = (((GX - side * 215) / 30) ** 2 + (GY / 35) ** 2 <= 1) & (((GX - side * 215) / 16) ** 2 + (GY / 16) ** 2 > 1)
        assert mask[arm_soft].all(), side
        assert (image[arm_soft] > -0.9).all()  # soft tissue, not air
    assert meta["labelled_voxels_outside_mask"] == 0
    air = ((GX / 175) ** 2 + (GY / 125) ** 2 > 1) & (np.abs(np.abs(GX) - 215) > 45)
    assert not mask[air].any()  # and no air between or around them


def test_an_unlabelled_island_apart_from_the_body_is_still_left_out(tmp_path: Path) -> None:
    """The seeds keep labelled components only: a table pad (no label) away from the body stays out."""
    n = 120
    hu, lab = np.full((n, n, 4), -1000, np.int16), np.zeros((n, n, 4), np.uint8)
    hu[20:80, 20:100] = 40
    lab[40:60, 40:80] = 1
    hu[95:110, 10:110] = 0  # a thick pad, 5 voxels of air below the body
    table = LabelTable.from_config([{"name": "background", "values": [0]}, {"name": "liver", "values": [1]}])
    affine = np.diag([3.0, 3.0, 5.0, 1.0])
    save_volume(tmp_path / "ct.nii.gz", hu, affine)
    save_volume(tmp_path / "label.nii.gz", lab, affine)
    preprocess_case("pad", tmp_path / "ct.nii.gz", tmp_path / "label.nii.gz", tmp_path / "out", table,
                    PreprocessSettings("CT", spacing_xy=3.0))
    mask = load_volume(tmp_path / "out" / "mask.nii.gz").array > 0
    assert mask[20:80, 20:100].all() and not mask[90:, :].any()


def test_a_ct_that_is_not_in_hounsfield_units_is_refused_naming_the_file(tmp_path: Path) -> None:
    """Raw scanner values without their intercept (air 24): the whole field of view became body and the
    body class filled the air, without a word."""
    hu = np.full((48, 48, 4), -1000, np.int16)
    hu[10:38, 12:36] = 40
    lab = np.zeros(hu.shape, np.uint8)
    lab[20:28, 20:28] = 1
    table = LabelTable.from_config([{"name": "background", "values": [0]}, {"name": "liver", "values": [1]}])
    affine = np.diag([3.0, 3.0, 5.0, 1.0])
    save_volume(tmp_path / "raw.nii.gz", (hu.astype(np.int32) + 1024).astype(np.uint16), affine)
    save_volume(tmp_path / "label.nii.gz", lab, affine)
    with pytest.raises(ValueError, match=r"raw.nii.gz: no voxel below the body threshold \(-500 HU; lowest 24\).*scl_inter"):
        preprocess_case("raw", tmp_path / "raw.nii.gz", tmp_path / "label.nii.gz", tmp_path / "out", table,
                        PreprocessSettings("CT", spacing_xy=3.0))
    save_volume(tmp_path / "hu.nii.gz", hu, affine)  # the same scan in HU is taken
    preprocess_case("hu", tmp_path / "hu.nii.gz", tmp_path / "label.nii.gz", tmp_path / "hu", table,
                    PreprocessSettings("CT", spacing_xy=3.0))
    assert (load_volume(tmp_path / "hu" / "mask.nii.gz").array > 0).mean() < 0.5


def test_a_table_just_below_the_back_is_not_given_back_with_the_skin(tmp_path: Path) -> None:
    """The opening cuts a thin table off; giving back the tissue within one element of the body took the table
    back too where it runs within that distance of the back, as islands apart from the body (the real CT
    example: 3204 voxels)."""
    n = 80
    x = np.arange(n) - n / 2 + 0.5
    X, Y = np.meshgrid(x, x, indexing="ij")
    hu = np.full((n, n, 4), -1000, np.int16)
    hu[(X / 30) ** 2 + (Y / 20) ** 2 <= 1] = 40
    hu[15:65, 17:19] = 0  # table top, 1 mm thick at 1 mm voxels, 1-2 mm below the back (y < -20)
    lab = np.zeros(hu.shape, np.uint8)
    lab[(X / 10) ** 2 + (Y / 8) ** 2 <= 1] = 1
    table = LabelTable.from_config([{"name": "background", "values": [0]}, {"name": "liver", "values": [1]}])
    affine = np.diag([1.0, 1.0, 5.0, 1.0])
    save_volume(tmp_path / "ct.nii.gz", hu, affine)
    save_volume(tmp_path / "label.nii.gz", lab, affine)
    preprocess_case("t", tmp_path / "ct.nii.gz", tmp_path / "label.nii.gz", tmp_path / "out", table,
                    PreprocessSettings("CT", spacing_xy=1.0))
    mask = load_volume(tmp_path / "out" / "mask.nii.gz").array > 0
    assert not mask[15:65, 17:19].any()
    assert mask[(X / 29) ** 2 + (Y / 19) ** 2 <= 1].all()  # the body with its skin
