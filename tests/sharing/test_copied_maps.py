"""A test case's label map coming back under another id (a generate_from folder, a second row of a cases
table) is found among the exported cases, byte for byte, whatever its name and patient id."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from medsynth.io.nifti import save_volume
from medsynth.io.tables import write_tsv
from medsynth.sharing.copied_maps import case_rows, copies_of_test_maps
from medsynth.sharing.nnunet_export import ExportCase

AFFINE = np.diag([-0.8, -0.8, 3.0, 1.0])  # LPS storage, as TotalSegmentator writes a DICOM-derived CT


def _label(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    return save_volume(path, rng.integers(0, 5, (12, 10, 4)).astype(np.uint8), AFFINE)


@pytest.fixture
def cohort(tmp_path: Path) -> dict:
    """Dataset ct: PETCT_01a_s1 (train), PETCT_06a_s1 (test); generate_from dataset maps: the test map saved
    flat again under its case id (patient = its file name), and another patient's map."""
    ct = tmp_path / "ct"
    train, test = _label(ct / "train.nii.gz", 1), _label(ct / "test.nii.gz", 2)
    write_tsv(ct / "cases.tsv", [{"case_id": "PETCT_01a_s1", "patient_id": "PETCT_01a", "label": str(train)},
                                 {"case_id": "PETCT_06a_s1", "patient_id": "PETCT_06a", "label": str(test)}],
              ["case_id", "patient_id", "label"])
    write_tsv(ct / "split.tsv", [{"case_id": "PETCT_01a_s1", "patient_id": "PETCT_01a", "part": "train"},
                                 {"case_id": "PETCT_06a_s1", "patient_id": "PETCT_06a", "part": "test"}],
              ["case_id", "patient_id", "part"])
    maps = tmp_path / "maps"
    maps.mkdir()
    copy = shutil.copyfile(test, maps / "PETCT_06a_s1.nii.gz")
    other = _label(maps / "PETCT_09a_s1.nii.gz", 3)
    write_tsv(maps / "cases.tsv", [{"case_id": "PETCT_06a_s1", "label": str(copy)},
                                   {"case_id": "PETCT_09a_s1", "label": str(other)}], ["case_id", "label"])
    return {"tables": {"ct": ct / "cases.tsv", "maps": maps / "cases.tsv"}, "splits": {"ct": ct / "split.tsv"},
            "train": train, "test": test, "copy": copy}


def _synthetic(dataset: str, case: str, label: Path) -> ExportCase:
    return ExportCase(f"{dataset}_{case}_syn00", label.with_name("sample_0.nii.gz"), label, patient=case,
                      provenance={"synthetic": True, "dataset": dataset, "source_case": case, "sample": "0"})


def test_a_test_map_saved_again_under_its_own_name_is_found(cohort):
    cases = [_synthetic("ct", "PETCT_01a_s1", cohort["train"]),
             _synthetic("maps", "PETCT_06a_s1", cohort["copy"]), _synthetic("maps", "PETCT_09a_s1", cohort["copy"])]
    found = copies_of_test_maps(cases, case_rows(cohort["tables"]), cohort["splits"])
    assert found == [f"maps_PETCT_06a_s1_syn00 ({cohort['copy']}) is a copy of ct case PETCT_06a_s1 "
                     f"({cohort['test']})"]
    # Without the cases tables (an export outside the workflow) nothing can be compared.
    assert copies_of_test_maps(cases, {}, cohort["splits"]) == []


def test_a_real_case_listing_a_test_file_under_another_patient_is_found(cohort):
    real = ExportCase("again_real", cohort["test"].with_name("ct.nii.gz"), cohort["test"], patient="PETCT_99z",
                      provenance={"synthetic": False, "case_id": "again"})
    assert copies_of_test_maps([real], case_rows(cohort["tables"]), cohort["splits"]) == [
        f"again_real ({cohort['test']}) is a copy of ct case PETCT_06a_s1 ({cohort['test']})"]


def test_maps_that_only_share_a_size_are_not_copies(cohort):
    same_size = cohort["copy"].with_name("PETCT_09a_s1.nii.gz")
    data = bytearray(cohort["test"].read_bytes())
    data[-1] ^= 0xFF  # the gzip trailer: same length, other bytes
    same_size.write_bytes(bytes(data))
    assert same_size.stat().st_size == cohort["test"].stat().st_size
    assert copies_of_test_maps([_synthetic("maps", "PETCT_09a_s1", same_size)], case_rows(cohort["tables"]),
                               cohort["splits"]) == []


def test_a_training_map_under_another_patient_shares_its_fold(cohort, tmp_path):
    """A training map listed again under another id (a generate_from folder): its synthetic cases and the
    original's land in one nnU-Net fold, or nnU-Net validates on the anatomy it trains on."""
    from medsynth.sharing.copied_maps import shared_map_patients
    from medsynth.sharing.nnunet_export import patient_folds

    maps = tmp_path / "maps2"
    maps.mkdir()
    again = shutil.copyfile(cohort["train"], maps / "PETCT_77x_s1.nii.gz")
    others = [_label(maps / f"PETCT_{i}0b_s1.nii.gz", 10 + i) for i in range(4)]
    rows = [{"case_id": "PETCT_77x_s1", "label": str(again)}]
    rows += [{"case_id": p.name.removesuffix(".nii.gz"), "label": str(p)} for p in others]
    write_tsv(maps / "cases.tsv", rows, ["case_id", "label"])
    tables = {"ct": cohort["tables"]["ct"], "maps2": maps / "cases.tsv"}
    cases = [_synthetic("ct", "PETCT_01a_s1", cohort["train"]), _synthetic("maps2", "PETCT_77x_s1", again)]
    cases += [_synthetic("maps2", r["case_id"], Path(r["label"])) for r in rows[1:]]
    cases = [ExportCase(c.identifier, c.image, c.label, c.patient.rsplit("_", 1)[0], provenance=c.provenance)
             for c in cases]
    joined = shared_map_patients(cases, case_rows(tables))
    assert joined == {"PETCT_77x": "PETCT_01a"}  # the others' maps are their own
    for k in (2, 3, 5):
        folds = patient_folds(cases, k, joined)
        home = [f for f in folds if "ct_PETCT_01a_s1_syn00" in f["val"]]
        assert len(home) == 1 and "maps2_PETCT_77x_s1_syn00" in home[0]["val"], folds
    # Without the join, round-robin put them in different folds (the defect).
    assert any("ct_PETCT_01a_s1_syn00" in f["val"] and "maps2_PETCT_77x_s1_syn00" not in f["val"]
               for f in patient_folds(cases, 5))


def test_the_export_states_which_generate_from_cases_generation_left_out(cohort):
    """The same rule as generation's (inference.held_out): the test map's copy and a test patient's id."""
    from medsynth.sharing.copied_maps import left_out_by_generation

    rows = [{"case_id": "PETCT_06a_s1", "label": str(cohort["copy"])},
            {"case_id": "PETCT_09a_s1", "label": str(cohort["copy"].with_name("PETCT_09a_s1.nii.gz"))},
            {"case_id": "again", "patient_id": "PETCT_06a",
             "label": str(cohort["copy"].with_name("PETCT_09a_s1.nii.gz"))}]
    write_tsv(cohort["tables"]["maps"], rows, ["case_id", "patient_id", "label"])
    assert left_out_by_generation(case_rows(cohort["tables"]), cohort["splits"]) == {
        "maps.PETCT_06a_s1": f"its label map {cohort['copy']} is a test case's ({cohort['test']}) under another id",
        "maps.again": "patient PETCT_06a is in the test part of ct"}
    # The split datasets' own cases are generation's to make or not: none is listed.
    assert left_out_by_generation(case_rows({"ct": cohort["tables"]["ct"]}), cohort["splits"]) == {}


def test_a_test_map_saved_again_with_other_bytes_is_found_by_its_voxels(cohort):
    """The test map saved again as .nii (other bytes, the same voxels on its grid): refused as a copy; and,
    a training map saved so, its patients share a fold."""
    import nibabel as nib

    from medsynth.sharing.copied_maps import shared_map_patients

    again, resaved = (cohort["copy"].with_name(f"{case}.nii") for case in ("PETCT_55q_s1", "PETCT_66r_s1"))
    nib.save(nib.load(cohort["test"]), again)
    nib.save(nib.load(cohort["train"]), resaved)
    assert again.read_bytes() != cohort["test"].read_bytes()
    write_tsv(cohort["tables"]["maps"], [{"case_id": p.name.removesuffix(".nii"), "label": str(p)}
                                         for p in (again, resaved)], ["case_id", "label"])
    cases = [_synthetic("maps", "PETCT_55q_s1", again), _synthetic("ct", "PETCT_01a_s1", cohort["train"])]
    assert copies_of_test_maps(cases, case_rows(cohort["tables"]), cohort["splits"]) == [
        f"maps_PETCT_55q_s1_syn00 ({again}) holds the voxels of ct case PETCT_06a_s1 ({cohort['test']}) on its "
        "grid, saved again"]
    cases = [ExportCase(c.identifier, c.image, c.label, c.patient.rsplit("_", 1)[0], provenance=c.provenance)
             for c in (_synthetic("ct", "PETCT_01a_s1", cohort["train"]), _synthetic("maps", "PETCT_66r_s1", resaved))]
    assert shared_map_patients(cases, case_rows(cohort["tables"])) == {"PETCT_66r": "PETCT_01a"}


def test_a_test_map_cropped_in_a_generate_from_folder_is_found_by_its_slices(tmp_path):
    """The export's check, after generation's (``held_out``): a generate_from map cropped from a test map.
    Maps of the split datasets are not read again (the split refused their crops)."""
    from tests.helpers.cropped import body_box_copy, phantom_maps

    (test, label, affine), (train, *_) = phantom_maps(tmp_path / "ct", 2)
    crop = save_volume(tmp_path / "maps" / "crop.nii.gz", *body_box_copy(label, affine, slice(4, 20)))
    tables = {"ct": tmp_path / "ct" / "cases.tsv", "maps": tmp_path / "maps" / "cases.tsv"}
    write_tsv(tables["ct"], [{"case_id": "t", "patient_id": "T", "label": str(test)},
                             {"case_id": "r", "patient_id": "R", "label": str(train)}], ["case_id", "patient_id", "label"])
    write_tsv(tables["maps"], [{"case_id": "crop", "label": str(crop)}], ["case_id", "label"])
    splits = {"ct": tmp_path / "ct" / "split.tsv"}
    write_tsv(splits["ct"], [{"case_id": "t", "patient_id": "T", "part": "test"},
                             {"case_id": "r", "patient_id": "R", "part": "train"}], ["case_id", "patient_id", "part"])
    cases = [_synthetic("ct", "r", train), _synthetic("maps", "crop", crop)]
    assert copies_of_test_maps(cases, case_rows(tables), splits) == [
        f"maps_crop_syn00 ({crop}) shares 16 axial slices with ct case t ({test}): one cropped from the other"]
