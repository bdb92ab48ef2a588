"""A test case's label map coming back under another id (a generate_from folder, a second row of a cases
table) is found among the exported cases, byte for byte, whatever its name and patient id."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from medsynth.io.nifti import save_volume
from medsynth.io.tables import write_tsv
from medsynth.sharing.copied_maps import copies_of_test_maps
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
    found = copies_of_test_maps(cases, cohort["tables"], cohort["splits"])
    assert found == [f"maps_PETCT_06a_s1_syn00 ({cohort['copy']}) is a copy of ct case PETCT_06a_s1 "
                     f"({cohort['test']})"]
    # Without the cases tables (an export outside the workflow) nothing can be compared.
    assert copies_of_test_maps(cases, {}, cohort["splits"]) == []


def test_a_real_case_listing_a_test_file_under_another_patient_is_found(cohort):
    real = ExportCase("again_real", cohort["test"].with_name("ct.nii.gz"), cohort["test"], patient="PETCT_99z",
                      provenance={"synthetic": False, "case_id": "again"})
    assert copies_of_test_maps([real], cohort["tables"], cohort["splits"]) == [
        f"again_real ({cohort['test']}) is a copy of ct case PETCT_06a_s1 ({cohort['test']})"]


def test_maps_that_only_share_a_size_are_not_copies(cohort):
    same_size = cohort["copy"].with_name("PETCT_09a_s1.nii.gz")
    data = bytearray(cohort["test"].read_bytes())
    data[-1] ^= 0xFF  # the gzip trailer: same length, other bytes
    same_size.write_bytes(bytes(data))
    assert same_size.stat().st_size == cohort["test"].stat().st_size
    assert copies_of_test_maps([_synthetic("maps", "PETCT_09a_s1", same_size)], cohort["tables"],
                               cohort["splits"]) == []
