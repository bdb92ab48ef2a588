"""generate_from cases of test patients left out of generation (medsynth.inference.held_out)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from medsynth.data.cohort import register_layout
from medsynth.inference.generate_cases import LabelCase
from medsynth.inference.held_out import generate_from_patients, leave_out_test_cases
from medsynth.io.nifti import save_volume
from medsynth.io.tables import write_tsv


def _case(case_id: str, part: str, patient: str) -> LabelCase:
    return LabelCase(case_id, Path(f"/nowhere/{case_id}/slices.npz"), Path(f"/nowhere/{case_id}"), part, "d",
                     case_id, patient)


def test_a_test_patients_study_under_another_name_is_left_out_with_a_warning(tmp_path, caplog) -> None:
    split = tmp_path / "mine" / "split.tsv"
    split.parent.mkdir()
    write_tsv(split, [{"case_id": "t0", "patient_id": "P_test", "part": "test"},
                      {"case_id": "r0", "patient_id": "P_train", "part": "train"}], ["case_id", "patient_id", "part"])
    files = {}
    for name, body in (("t0", b"test map"), ("r0", b"train map"), ("maps.copy", b"test map"),
                       ("maps.same_id", b"own map 1"), ("maps.new", b"own map 2"), ("maps.trainlike", b"train map")):
        files[name] = str(tmp_path / f"{name}.nii.gz")
        Path(files[name]).write_bytes(body)
    cases = [_case("t0", "test", "P_test"), _case("r0", "train", "P_train"),
             _case("maps.copy", "generate_from", "copy"),  # the test map's bytes under another id
             _case("maps.same_id", "generate_from", "P_test"),  # the test patient's id
             _case("maps.new", "generate_from", "new"), _case("maps.trainlike", "generate_from", "other")]
    with caplog.at_level(logging.WARNING):
        kept = leave_out_test_cases(cases, files, {"mine": split}, [files["t0"]])
    # The experiment's own test case is generated (evaluate scores it); a training map's copy is no test leak.
    assert [c.case_id for c in kept] == ["t0", "r0", "maps.new", "maps.trainlike"]
    warned = "\n".join(r.getMessage() for r in caplog.records)
    assert f"maps.copy left out: its label map {files['maps.copy']} is a test case's ({files['t0']})" in warned
    assert "maps.same_id left out: patient P_test is in the test part of mine" in warned
    assert "maps.new" not in warned and "trainlike" not in warned


def test_without_test_maps_or_generate_from_cases_nothing_is_left_out(tmp_path) -> None:
    split = tmp_path / "split.tsv"
    write_tsv(split, [{"case_id": "t0", "patient_id": "P", "part": "test"}], ["case_id", "patient_id", "part"])
    (tmp_path / "a").write_bytes(b"x")
    cases = [_case("t0", "test", "P"), _case("maps.a", "generate_from", "Q")]
    assert leave_out_test_cases(cases, {"t0": str(tmp_path / "a"), "maps.a": str(tmp_path / "a")}, {"m": split},
                                []) == cases


def _kept_beside_one_test_map(tmp_path: Path, files: dict[str, str], caplog) -> list[str]:
    """The cases generation keeps of ``files``: test case t0 (patient P) and generate_from maps of other
    patients (each its own), their warnings in ``caplog``."""
    split = tmp_path / "split.tsv"
    write_tsv(split, [{"case_id": "t0", "patient_id": "P", "part": "test"}], ["case_id", "patient_id", "part"])
    cases = [_case(c, "test", "P") if c == "t0" else _case(c, "generate_from", f"Q{i}") for i, c in enumerate(files)]
    with caplog.at_level(logging.WARNING):
        return [c.case_id for c in leave_out_test_cases(cases, files, {"m": split}, [files["t0"]])]


def test_a_test_map_saved_again_with_other_bytes_is_left_out(tmp_path, caplog) -> None:
    """TotalSegmentator's output of a test study, saved again (.nii, not .nii.gz) in a generate_from folder:
    other bytes, the same voxels on the same grid. A map of the same grid with other voxels is kept."""
    import nibabel as nib
    import numpy as np

    labels = np.zeros((8, 8, 3), np.uint8)
    labels[2:5, 3:6] = 3
    affine = np.diag([-0.8, -0.8, 2.5, 1.0])
    files = {"t0": str(tmp_path / "t0.nii.gz"), "maps.again": str(tmp_path / "again.nii"),
             "maps.other": str(tmp_path / "other.nii.gz")}
    nib.save(nib.Nifti1Image(labels, affine), files["t0"])
    nib.save(nib.Nifti1Image(labels, affine), files["maps.again"])
    nib.save(nib.Nifti1Image(np.roll(labels, 1, axis=0), affine), files["maps.other"])
    assert _kept_beside_one_test_map(tmp_path, files, caplog) == ["t0", "maps.other"]
    assert (f"maps.again left out: its label map {files['maps.again']} holds a test case's voxels on its grid "
            f"({files['t0']}), saved again") in caplog.text


def _label_map(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    affine = np.array([[-1.5, 0, 0, 120.0], [0, -1.5, 0, 90.0], [0, 0, 3.0, -40.0], [0, 0, 0, 1]])
    save_volume(path, np.full((4, 4, 2), value, np.uint8), affine)


def test_a_generate_from_dataset_naming_no_patients_is_warned_about_in_the_generation_log(tmp_path, caplog) -> None:
    """AutoPET's test patient PETCT_0af7ffe12a: a later study of it among TotalSegmentator maps found as
    {case}.nii.gz is its own patient, matched by no id, bytes or voxels, and no split warns (never split)."""
    maps = tmp_path / "maps"
    _label_map(maps / "PETCT_0af7ffe12a_03-23-2007.nii.gz", 3)
    _label_map(maps / "PETCT_1bc2_01-02-2010.nii.gz", 4)
    table = register_layout(maps, {"label": "{case}.nii.gz"}, tmp_path / "raw" / "extra" / "cases.tsv", "CT")
    with caplog.at_level(logging.WARNING):
        patients = generate_from_patients([table])
    assert patients[("extra", "PETCT_0af7ffe12a_03-23-2007")] == "PETCT_0af7ffe12a_03-23-2007"
    (warning,) = [r.getMessage() for r in caplog.records]
    assert warning.startswith(f"{table}: generate_from dataset extra names no patients (each of its 2 cases")
    assert "another study of a test patient is generated and exported" in warning
    assert "patient ids spelt as the split datasets'" in warning and "datasets.extra.layout" in warning
    caplog.clear()  # with the patient ids (AutoPET's spelling): no warning
    _label_map(tmp_path / "studies" / "PETCT_0af7ffe12a" / "03-23-2007.nii.gz", 3)
    _label_map(tmp_path / "studies" / "PETCT_1bc2" / "01-02-2010.nii.gz", 4)
    named = register_layout(tmp_path / "studies", {"label": "{patient}/{study}.nii.gz"},
                            tmp_path / "raw" / "named" / "cases.tsv", "CT")
    with caplog.at_level(logging.WARNING):
        patients = generate_from_patients([named])
    assert patients[("named", "PETCT_0af7ffe12a_03-23-2007")] == "PETCT_0af7ffe12a" and not caplog.records


def test_a_test_map_cropped_and_saved_again_is_left_out(tmp_path, caplog) -> None:
    """A test study's TotalSegmentator map re-exported with 10 of its slices and the air around the body cut
    away, in DICOM's order, in a generate_from folder: no bytes, voxels or grid in common, its slices alike.
    Another patient's map of the same grid is generated."""
    from tests.helpers.cropped import body_box_copy, phantom_maps

    (test, label, affine), (other, *_) = phantom_maps(tmp_path, 2)
    crop = save_volume(tmp_path / "maps" / "crop.nii.gz", *body_box_copy(label, affine, slice(8, 18)))
    files = {"t0": str(test), "maps.crop": str(crop), "maps.other": str(other)}
    assert _kept_beside_one_test_map(tmp_path, files, caplog) == ["t0", "maps.other"]
    assert (f"maps.crop left out: its label map {crop} shares 10 axial slices with a test case's ({test}), voxel "
            "count for voxel count of every label: one cropped from the other, under another id") in caplog.text
