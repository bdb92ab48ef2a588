"""Finding cases in a folder by filename pattern (bring-your-own-data path)."""

from pathlib import Path

import pytest

from medsynth.data.cohort import case_problems, discover_cases, missing_files, register_layout
from medsynth.io.tables import read_tsv


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


@pytest.fixture
def autopet_like(tmp_path):
    root, labels = tmp_path / "FDG", tmp_path / "seg"
    for patient, study in [("PETCT_b", "2002-01"), ("PETCT_a", "2001-05"), ("PETCT_a", "2003-07")]:
        touch(root / patient / study / "CTres.nii.gz")
        touch(root / patient / study / "SUV.nii.gz")
        touch(labels / f"{patient}_{study}.nii.gz")
    return root, labels


def test_two_placeholders_form_sorted_case_ids_and_find_labels(autopet_like):
    root, labels = autopet_like
    rows = discover_cases(root, {"image": "{patient}/{study}/CTres.nii.gz", "label": "{patient}_{study}.nii.gz"},
                          label_root=labels)
    assert [r["case_id"] for r in rows] == ["PETCT_a_2001-05", "PETCT_a_2003-07", "PETCT_b_2002-01"]
    assert rows[0]["image"].endswith("PETCT_a/2001-05/CTres.nii.gz")
    assert rows[0]["label"] == str((labels / "PETCT_a_2001-05.nii.gz").resolve())
    assert "mask" not in rows[0]


def test_folder_names_with_spaces_give_case_ids_without_and_still_find_their_labels(tmp_path):
    """AutoPET's TCIA study folders hold spaces; a case id may not (the split refuses such a table)."""
    from medsynth.data.cohort import read_cases

    study = "03-23-2003-NA-PET-CT Ganzkoerper  primaer mit KM-10445"
    touch(tmp_path / "FDG" / "PETCT_0011f3deaf" / study / "CTres.nii.gz")
    touch(tmp_path / "seg" / f"PETCT_0011f3deaf_{study}.nii.gz")
    table = register_layout(tmp_path / "FDG", {"image": "{patient}/{study}/CTres.nii.gz",
                                               "label": "{patient}_{study}.nii.gz"},
                            tmp_path / "cases.tsv", "CT", label_root=tmp_path / "seg")
    (row,) = read_cases(table)
    assert row["case_id"] == "PETCT_0011f3deaf_03-23-2003-NA-PET-CT_Ganzkoerper_primaer_mit_KM-10445"
    assert row["patient_id"] == "PETCT_0011f3deaf" and Path(row["label"]).is_file()


def test_case_placeholder_and_mask(tmp_path):
    for cid in ("1PA001", "1PA004"):
        for name in ("mr", "ct", "mask"):
            touch(tmp_path / "Task1" / "pelvis" / cid / f"{name}.nii.gz")
        touch(tmp_path / "labels" / f"{cid}.nii.gz")
    touch(tmp_path / "Task1" / "brain" / "1BA001" / "mr.nii.gz")  # another region: not matched
    out = register_layout(
        tmp_path, {"image": "Task1/pelvis/{case}/mr.nii.gz", "mask": "Task1/pelvis/{case}/mask.nii.gz",
                   "label": "{case}.nii.gz"}, tmp_path / "cases.tsv", "MR", label_root=tmp_path / "labels")
    rows = read_tsv(out)
    assert [r["case_id"] for r in rows] == ["1PA001", "1PA004"]
    assert all(r["modality"] == "MR" and r["mask"].endswith("mask.nii.gz") for r in rows)


def test_missing_label_fails_its_case_not_the_dataset(autopet_like, tmp_path, caplog):
    root, labels = autopet_like
    (labels / "PETCT_b_2002-01.nii.gz").unlink()
    layout = {"image": "{patient}/{study}/CTres.nii.gz", "label": "{patient}_{study}.nii.gz"}
    with caplog.at_level("WARNING"):
        out = register_layout(root, layout, tmp_path / "cases.tsv", "CT", label_root=labels)
    assert [r["case_id"] for r in read_tsv(out)] == ["PETCT_a_2001-05", "PETCT_a_2003-07", "PETCT_b_2002-01"]
    assert "PETCT_b_2002-01.nii.gz" in caplog.text and "layout.label" in caplog.text
    (problem,) = case_problems(out, "PETCT_b_2002-01")
    assert "PETCT_b_2002-01.nii.gz: label file of case 'PETCT_b_2002-01'" in problem and "line 4" in problem
    assert case_problems(out, "PETCT_a_2001-05") == []
    for f in labels.iterdir():  # no label at all: the pattern is wrong, which stops the dataset
        f.unlink()
    with pytest.raises(FileNotFoundError, match="no case has all its files.*layout.label"):
        register_layout(root, layout, tmp_path / "cases.tsv", "CT", label_root=labels)


def test_patient_placeholder_gives_the_patient_id(autopet_like, tmp_path):
    root, labels = autopet_like
    rows = discover_cases(root, {"image": "{patient}/{study}/CTres.nii.gz", "label": "{patient}_{study}.nii.gz"},
                          label_root=labels)
    assert [r["patient_id"] for r in rows] == ["PETCT_a", "PETCT_a", "PETCT_b"]
    # Without {patient} in layout.image every case is its own patient, and {patient} means the case id.
    touch(tmp_path / "flat" / "x1_ct.nii.gz")
    touch(tmp_path / "flat" / "x1" / "seg.nii.gz")
    (row,) = discover_cases(tmp_path / "flat", {"image": "{case}_ct.nii.gz", "label": "{patient}/seg.nii.gz"})
    assert row["patient_id"] == row["case_id"] == "x1" and row["label"].endswith("x1/seg.nii.gz")
    with pytest.raises(ValueError, match=r"layout.label.*\{visit\}"):
        discover_cases(tmp_path / "flat", {"image": "{case}_ct.nii.gz", "label": "{visit}/seg.nii.gz"})


def test_no_match_and_missing_root_and_pattern_without_placeholder(tmp_path):
    with pytest.raises(FileNotFoundError, match="local.root"):
        discover_cases(tmp_path / "nope", {"image": "{case}.nii.gz", "label": "{case}.nii.gz"})
    with pytest.raises(ValueError, match="no files match"):
        discover_cases(tmp_path, {"image": "{case}/ct.nii.gz", "label": "{case}.nii.gz"})
    with pytest.raises(ValueError, match="placeholder"):
        discover_cases(tmp_path, {"image": "ct.nii.gz", "label": "x"})


def test_a_layout_without_image_finds_label_only_cases_by_the_label_pattern(autopet_like, tmp_path):
    _, labels = autopet_like
    # AutoPET's flat names hold '_' inside the patient id: PETCT_a + 2001-05, or PETCT + a_2001-05?
    with pytest.raises(ValueError, match="reads this name two ways"):
        discover_cases(labels, {"label": "{patient}_{study}.nii.gz"})
    for f in sorted(labels.iterdir()):
        patient, study = f.name[:7], f.name[8:]
        touch(tmp_path / "by_patient" / patient / study)
    rows = discover_cases(tmp_path / "by_patient", {"label": "{patient}/{study}.nii.gz"})
    assert [r["case_id"] for r in rows] == ["PETCT_a_2001-05", "PETCT_a_2003-07", "PETCT_b_2002-01"]
    assert [r["patient_id"] for r in rows] == ["PETCT_a", "PETCT_a", "PETCT_b"]  # studies of a patient together
    assert all(r["image"] == "" for r in rows) and rows[0]["label"].endswith("PETCT_a/2001-05.nii.gz")
    with pytest.raises(ValueError, match="layout.label"):
        discover_cases(labels, {"label": "{case}/nothing.nii.gz"})


def test_a_layout_pattern_may_name_dicom_series_folders(tmp_path):
    """``{case}/ct`` matches a folder of slices as it matches a file; the row names the folder."""
    for cid in ("b02", "a01"):
        touch(tmp_path / cid / "ct" / "IM0001.dcm")
        touch(tmp_path / cid / "seg.nii.gz")
    rows = discover_cases(tmp_path, {"image": "{case}/ct", "label": "{case}/seg.nii.gz"})
    assert [r["case_id"] for r in rows] == ["a01", "b02"]
    assert rows[0]["image"] == str((tmp_path / "a01" / "ct").resolve())
    assert not missing_files(rows[0])


def test_a_pattern_that_reads_a_name_two_ways_is_refused(tmp_path):
    """'{patient}_{study}' on P01_2020_01: patient P01 or P01_2020? A wrong reading gives each study its own
    patient id, and one patient's studies land in several split parts."""
    for patient in ("P01", "P02"):
        for study in ("2020_01", "2021_06"):
            touch(tmp_path / "flat" / f"{patient}_{study}.nii.gz")
    with pytest.raises(ValueError, match=r"P01_2020_01.nii.gz: layout.label = '\{patient\}_\{study\}.nii.gz' reads "
                                         r"this name two ways.*own folders"):
        discover_cases(tmp_path / "flat", {"label": "{patient}_{study}.nii.gz"})
    # One '_' per name: one reading, the patient's studies share its id.
    for patient in ("P01", "P02"):
        for study in ("2020-01", "2021-06"):
            touch(tmp_path / "dashes" / f"{patient}_{study}.nii.gz")
    rows = discover_cases(tmp_path / "dashes", {"label": "{patient}_{study}.nii.gz"})
    assert [r["patient_id"] for r in rows] == ["P01", "P01", "P02", "P02"]


def test_folder_names_outside_the_case_wildcard_become_case_ids_inside_it(tmp_path):
    """'CT Thorax+Abdomen' made the id P00_CT_Thorax+Abdomen, which the workflow's {case} cannot match (the
    whole plan failed with a bare MissingInputException)."""
    for study in ("CT Thorax+Abdomen", "CT Abdomen"):
        touch(tmp_path / "data" / "P00" / study / "ct.nii.gz")
    rows = discover_cases(tmp_path / "data", {"image": "{patient}/{study}/ct.nii.gz"})
    assert [r["case_id"] for r in rows] == ["P00_CT_Abdomen", "P00_CT_Thorax_Abdomen"]
    assert {r["patient_id"] for r in rows} == {"P00"}


def test_the_case_wildcard_is_the_case_id_rule():
    from medsynth.data.cohort import CASE_ID

    common = (Path(__file__).resolve().parents[2] / "workflow" / "rules" / "common.smk").read_text()
    assert "case=CASE_ID" in common and "from medsynth.data.cohort import CASE_ID" in common
    assert CASE_ID == r"[A-Za-z0-9_.\-]+"
