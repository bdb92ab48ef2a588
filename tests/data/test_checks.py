"""Input checks at preprocessing (medsynth.data.checks and the messages of bad label maps)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medsynth.data.labels import LabelError, LabelTable
from medsynth.data.preprocess import PreprocessSettings, preprocess_case
from medsynth.io.nifti import VolumeError, load_volume, save_volume

TABLE = LabelTable.from_config([{"name": f"class{v}", "values": [v]} for v in range(10)])
DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "totalseg-example"


def _preprocess(folder: Path, ct: Path, label: Path, table: LabelTable = TABLE, mask: Path | None = None,
                spacing_xy: float | None = 8.0) -> dict[str, np.ndarray]:
    preprocess_case("c", ct, label, folder, table, PreprocessSettings("CT", spacing_xy), mask_path=mask)
    return {k: load_volume(folder / f"{k}.nii.gz").array for k in ("image", "label", "mask")}


def _lps(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same voxels stored with x and y reversed (RAS -> LPS)."""
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[0, 3], flip[1, 3] = array.shape[0] - 1, array.shape[1] - 1
    return np.ascontiguousarray(array[::-1, ::-1]), affine @ flip


def _xy_swapped(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same voxels stored with the first two axes exchanged (another shape)."""
    return np.ascontiguousarray(array.transpose(1, 0, 2)), affine[:, [1, 0, 2, 3]]


# ------------------------------------------------------------------ orientation (5d)


@pytest.mark.parametrize("restore", [_lps, _xy_swapped], ids=["lps", "axes-swapped"])
def test_label_and_mask_in_another_orientation_of_the_grid_are_reoriented(tmp_path, phantom_case, restore):
    case = phantom_case(0)
    assert nib.aff2axcodes(case.affine) == ("R", "A", "S")
    ct = save_volume(tmp_path / "ct.nii.gz", case.ct, case.affine)
    mask = (case.label > 0).astype(np.uint8)
    same = _preprocess(tmp_path / "same", ct, save_volume(tmp_path / "label.nii.gz", case.label, case.affine),
                       mask=save_volume(tmp_path / "mask.nii.gz", mask, case.affine))
    label, label_affine = restore(case.label, case.affine)
    assert nib.aff2axcodes(label_affine) != ("R", "A", "S")
    other = _preprocess(tmp_path / "other", ct, save_volume(tmp_path / "label_o.nii.gz", label, label_affine),
                        mask=save_volume(tmp_path / "mask_o.nii.gz", *restore(mask, case.affine)))
    for name in ("label", "mask", "image"):
        np.testing.assert_array_equal(other[name], same[name], err_msg=name)
    assert same["label"].any()


def test_another_orientation_of_another_grid_is_still_refused(tmp_path, phantom_case):
    case = phantom_case(0)
    ct = save_volume(tmp_path / "ct.nii.gz", case.ct, case.affine)
    label, affine = _lps(case.label, case.affine)
    affine[0, 3] += 4.0  # one voxel off
    lab = save_volume(tmp_path / "label.nii.gz", label, affine)
    with pytest.raises(VolumeError, match="register or resample") as exc:
        _preprocess(tmp_path / "out", ct, lab)
    assert str(ct) in str(exc.value) and str(lab) in str(exc.value)


def test_real_label_stored_lps_gives_the_same_classes(tmp_path):
    ct, label = DATA / "ct.nii.gz", DATA / "label.nii.gz"
    if not (ct.is_file() and label.is_file()):
        pytest.skip(f"real CT example not available at {DATA}")
    raw = load_volume(label)
    table = LabelTable.from_config([{"name": "background", "values": [0]}]
                                   + [{"name": f"ts{v}", "values": [int(v)]} for v in np.unique(raw.array)[1:]])
    same = _preprocess(tmp_path / "same", ct, label, table, spacing_xy=None)
    lps = save_volume(tmp_path / "label_lps.nii.gz", *_lps(raw.array, raw.affine))
    other = _preprocess(tmp_path / "other", ct, lps, table, spacing_xy=None)
    np.testing.assert_array_equal(other["label"], same["label"])
    np.testing.assert_array_equal(other["mask"], same["mask"])


# ------------------------------------------------------------------ all background (5a)


@pytest.mark.parametrize("background", [[0], [0, 7]])
def test_all_background_label_map_is_refused_naming_the_file(tmp_path, phantom_case, background):
    case = phantom_case(0)
    ct = save_volume(tmp_path / "ct.nii.gz", case.ct, case.affine)
    empty = np.where(case.label > 0, background[-1], 0).astype(np.uint8)
    lab = save_volume(tmp_path / "label.nii.gz", empty, case.affine)
    table = LabelTable.from_config([{"name": "outside", "values": background}, {"name": "organ", "values": [1]}])
    with pytest.raises(LabelError, match="only background") as exc:
        _preprocess(tmp_path / "out", ct, lab, table)
    assert str(lab) in str(exc.value) and "'outside'" in str(exc.value)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ image given as the label (5e)


def test_image_given_as_label_gives_a_short_message_that_says_swapped(tmp_path, phantom_case):
    case = phantom_case(0)
    ct = save_volume(tmp_path / "ct.nii.gz", case.ct, case.affine)
    n_values = len(np.setdiff1d(np.unique(case.ct), np.arange(10)))
    assert n_values > 1000
    with pytest.raises(LabelError) as exc:
        _preprocess(tmp_path / "out", ct, ct)  # image and label columns swapped: the CT is the "label"
    message = str(exc.value)
    assert len(message) < 700, message
    assert str(ct) in message and f"{n_values} values" in message and "swapped" in message
    assert str(int(case.ct.min())) in message  # the first (lowest) values are shown


def test_non_integer_image_given_as_label_says_swapped(tmp_path, phantom_case):
    case = phantom_case(0)
    ct = save_volume(tmp_path / "ct.nii.gz", case.ct, case.affine)
    float_ct = save_volume(tmp_path / "ct_float.nii.gz", case.ct.astype(np.float32) + 0.25, case.affine)
    with pytest.raises(VolumeError, match="swapped") as exc:
        _preprocess(tmp_path / "out", ct, float_ct)
    assert str(float_ct) in str(exc.value) and len(str(exc.value)) < 400


def test_real_ct_given_as_label_says_swapped(tmp_path):
    ct = DATA / "ct.nii.gz"
    if not ct.is_file():
        pytest.skip(f"real CT example not available at {DATA}")
    with pytest.raises(LabelError, match="swapped") as exc:
        _preprocess(tmp_path / "out", DATA / "label.nii.gz", ct, TABLE, spacing_xy=None)
    assert len(str(exc.value)) < 700
