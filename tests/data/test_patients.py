"""A dataset's patients as known when the config loads (medsynth.data.patients), the same as the download's."""

from __future__ import annotations

from medsynth.data.cohort import read_cases
from medsynth.data.patients import KnownPatients, known_cases, listed, patients_in_test
from medsynth.data.phantom import write_cohort
from medsynth.data.split import split_table
from medsynth.io.tables import write_tsv

RATIOS = {"train": 0.5, "val": 0.25, "test": 0.25}


def test_a_phantom_cohorts_cases_are_known_without_drawing_it(tmp_path) -> None:
    table = write_cohort(tmp_path, 3, seed=4, shape=(32, 32, 4), spacing=(8.0, 8.0, 8.0))
    known = known_cases("p", {"source": "phantom", "phantom": {"n_cases": 3, "seed": 4}})
    assert known == [{"case_id": r["case_id"], "patient_id": r["patient_id"]} for r in read_cases(table)]


def test_a_layout_gives_patients_from_its_placeholder_and_the_split_is_the_split_stages(tmp_path) -> None:
    for patient, study in (("a", "1"), ("a", "2"), ("b", "1"), ("c", "1"), ("d", "1")):
        (tmp_path / patient / study).mkdir(parents=True)
        (tmp_path / patient / study / "ct.nii.gz").write_bytes(b"names only")
    ds = {"source": "local", "local": {"root": str(tmp_path)},
          "layout": {"image": "{patient}/{study}/ct.nii.gz", "label": "{patient}/{study}/seg.nii.gz"}}
    rows = known_cases("mine", ds)
    assert [(r["case_id"], r["patient_id"]) for r in rows] == [("a_1", "a"), ("a_2", "a"), ("b_1", "b"), ("c_1", "c"),
                                                               ("d_1", "d")]
    known = KnownPatients({"datasets": {"mine": ds}, "split": {"seed": 0, "ratios": RATIOS}})
    expected = {r["patient_id"] for r in split_table(rows, RATIOS, 0) if r["part"] == "test"}
    assert known.test("mine") == expected and known.patients("mine") == {"a", "b", "c", "d"}
    assert known.in_parts("mine", ("train", "val", "test")) == {"a", "b", "c", "d"}


def test_a_url_dataset_is_known_once_downloaded_and_a_broken_source_is_not_known(tmp_path) -> None:
    ds = {"source": "url", "url": {"href": "https://example.org/x.zip"}, "layout": {"image": "{case}.nii.gz"}}
    assert known_cases("web", ds, tmp_path) is None
    write_tsv(tmp_path / "resources/raw/web/cases.tsv", [{"case_id": "w1", "image": "w1.nii", "label": "w1l.nii"}],
              ["case_id", "image", "label"])
    assert known_cases("web", ds, tmp_path) == [{"case_id": "w1", "patient_id": "w1"}]
    assert known_cases("x", {"source": "local", "local": {"root": str(tmp_path / "absent")},
                             "layout": {"image": "{case}.nii.gz"}}) is None
    (tmp_path / "bad.tsv").write_text("case_id\tlabel\nx\ty\n")  # no image column: the download says so
    assert known_cases("x", {"source": "local", "local": {"cases_table": str(tmp_path / "bad.tsv")}}) is None
    assert KnownPatients({"datasets": {"web": ds}}).test("web") is None  # no split settings: not known


def test_the_test_patients_of_written_split_tables_and_how_they_are_listed(tmp_path) -> None:
    columns = ["case_id", "patient_id", "part"]
    a = write_tsv(tmp_path / "a.tsv", [{"case_id": "x", "patient_id": "p", "part": "test"},
                                       {"case_id": "y", "patient_id": "q", "part": "train"}], columns)
    b = write_tsv(tmp_path / "b.tsv", [{"case_id": "z", "patient_id": "p", "part": "test"}], columns)
    assert patients_in_test({"b": b, "a": a}) == {"p": "a"}
    assert listed([f"p{i:02d}" for i in range(12)], 3) == "p00, p01, p02, … (12 in all)"
