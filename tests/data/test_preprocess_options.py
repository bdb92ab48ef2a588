"""Provided masks, the QC picture, output-folder errors and the shipped TotalSegmentator label table."""

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from medsynth.data.labels import LabelTable
from medsynth.data.phantom import PHANTOM_LABELS, make_case
from medsynth.data.preprocess import PreprocessSettings, preprocess_case
from medsynth.io.nifti import load_volume, save_volume

REPO = Path(__file__).resolve().parents[2]
REAL = REPO.parent / "shared" / "data" / "totalseg-example"
TABLE = LabelTable.from_config([{"name": n, "values": [v]} for v, n in sorted(PHANTOM_LABELS.items())])


@pytest.fixture
def case_files(tmp_path):
    case = make_case(1, seed=2, shape=(64, 64, 8), spacing=(6.0, 6.0, 8.0))
    return case, save_volume(tmp_path / "ct.nii.gz", case.ct, case.affine), \
        save_volume(tmp_path / "label.nii.gz", case.label, case.affine)


def test_a_provided_mask_replaces_the_computed_one(tmp_path, case_files):
    case, ct, label = case_files
    given = np.zeros(case.ct.shape, np.uint8)
    given[8:56, 8:56, :] = 1  # a box that holds the body and part of the table
    mask_file = save_volume(tmp_path / "mask.nii.gz", given, case.affine)
    meta = preprocess_case("c", ct, label, tmp_path / "out", TABLE, PreprocessSettings("CT", None),
                           mask_path=mask_file)
    mask = load_volume(tmp_path / "out" / "mask.nii.gz", np.uint8).array
    expected = given[::-1, ::-1] | (case.label[::-1, ::-1] > 0)  # LPS case: canonical flips x and y
    np.testing.assert_array_equal(mask, expected)
    assert meta["mask_source"] == str(mask_file)


def test_a_provided_mask_on_another_grid_is_refused(tmp_path, case_files):
    case, ct, label = case_files
    bad = save_volume(tmp_path / "mask.nii.gz", np.ones((64, 64, 7), np.uint8), case.affine)
    with pytest.raises(ValueError, match="mask.nii.gz"):
        preprocess_case("c", ct, label, tmp_path / "out", TABLE, PreprocessSettings("CT", None), mask_path=bad)


def test_qc_picture_is_written(tmp_path, case_files):
    _, ct, label = case_files
    preprocess_case("c", ct, label, tmp_path / "out", TABLE, PreprocessSettings("CT", 8.0),
                    qc_path=tmp_path / "out" / "qc.png")
    with Image.open(tmp_path / "out" / "qc.png") as img:
        pixels = np.asarray(img.convert("RGB"))
    assert pixels.shape[1] > pixels.shape[0] > 100  # three panels side by side
    assert pixels.std() > 20  # not blank


def test_an_output_folder_that_cannot_be_created_is_named(tmp_path, case_files):
    _, ct, label = case_files
    (tmp_path / "blocked").write_text("a file where the output folder should be")
    with pytest.raises(OSError, match=r"blocked/out: cannot create output folder"):
        preprocess_case("c", ct, label, tmp_path / "blocked" / "out", TABLE, PreprocessSettings("CT", None))


def test_shipped_totalsegmentator_table_covers_every_value_once():
    entries = yaml.safe_load((REPO / "config/labels/totalsegmentator_v2_grouped.yaml").read_text())
    table = LabelTable.from_config(entries)
    values = sorted(v for vals in table.values for v in vals)
    assert values == list(range(118))  # TotalSegmentator v2 'total': 0 + 117 classes
    assert table.names[0] == "background"


def test_real_ct_through_the_shipped_label_table(tmp_path):
    if not (REAL / "ct.nii.gz").is_file():
        pytest.skip(f"real CT example not available at {REAL}")
    entries = yaml.safe_load((REPO / "config/labels/totalsegmentator_v2_grouped.yaml").read_text())
    table = LabelTable.from_config(entries)
    meta = preprocess_case("real", REAL / "ct.nii.gz", REAL / "label.nii.gz", tmp_path, table,
                           PreprocessSettings("CT", None), qc_path=tmp_path / "qc.png")
    label = load_volume(tmp_path / "label.nii.gz", np.uint8).array
    mask = load_volume(tmp_path / "mask.nii.gz", np.uint8).array.astype(bool)
    present = {table.names[c] for c in np.unique(label)}
    assert {"liver", "spleen", "kidney", "bone"} <= present
    assert mask[label > 0].all()
    assert meta["labelled_voxels_outside_mask"] < 0.01 * np.count_nonzero(label)
