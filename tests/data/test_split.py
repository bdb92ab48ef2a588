"""Deterministic patient-level split (medsynth.data.split)."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from medsynth.data.cohort import read_cases
from medsynth.data.split import PARTS, SPLIT_COLUMNS, cases_as_patients, split_cases, split_table
from medsynth.io.tables import read_tsv

RATIOS = {"train": 0.6, "val": 0.2, "test": 0.2}


def _ids(n: int, prefix: str = "case") -> list[str]:
    return [f"{prefix}_{i:04d}" for i in range(n)]


def test_every_case_in_exactly_one_part() -> None:
    ids = _ids(50)
    parts = split_cases(ids, RATIOS, seed=0)
    assert sorted(parts) == sorted(ids)
    assert set(parts.values()) <= set(PARTS)
    assert sum(Counter(parts.values()).values()) == 50


def test_deterministic_for_same_seed_and_independent_of_order() -> None:
    ids = _ids(50)
    a = split_cases(ids, RATIOS, seed=3)
    b = split_cases(list(reversed(ids)), RATIOS, seed=3)
    assert a == b


def test_different_seed_gives_different_assignment() -> None:
    ids = _ids(50)
    a = split_cases(ids, RATIOS, seed=0)
    b = split_cases(ids, RATIOS, seed=1)
    moved = sum(a[c] != b[c] for c in ids)
    assert moved >= 10  # independent draws: about half the cases change part


def test_adding_cases_never_moves_existing_ones() -> None:
    old = _ids(50)
    new = old + _ids(10, prefix="late")
    before = split_cases(old, RATIOS, seed=0)
    after = split_cases(new, RATIOS, seed=0)
    assert {c: after[c] for c in old} == before
    # Removing cases does not move the others either.
    fewer = split_cases(old[10:], RATIOS, seed=0)
    assert fewer == {c: before[c] for c in old[10:]}


def test_ratios_roughly_respected_on_1000_cases() -> None:
    ratios = {"train": 0.7, "val": 0.1, "test": 0.2}
    counts = Counter(split_cases(_ids(1000), ratios, seed=0).values())
    for part, ratio in ratios.items():
        assert abs(counts[part] / 1000 - ratio) <= 0.05, (part, counts)


@pytest.mark.parametrize("seed", range(10))
def test_six_cases_leave_no_part_empty(seed: int) -> None:
    parts = split_cases(_ids(6), RATIOS, seed=seed)
    counts = Counter(parts.values())
    assert all(counts[p] >= 1 for p in PARTS), counts
    assert sum(counts.values()) == 6


def test_three_cases_fill_three_parts() -> None:
    counts = Counter(split_cases(_ids(3), RATIOS, seed=0).values())
    assert counts == Counter({"train": 1, "val": 1, "test": 1})


def test_zero_ratio_part_stays_empty() -> None:
    parts = split_cases(_ids(40), {"train": 0.8, "val": 0.2, "test": 0.0}, seed=0)
    counts = Counter(parts.values())
    assert counts["test"] == 0 and counts["train"] > 0 and counts["val"] > 0


def test_too_few_cases_for_the_parts_raise() -> None:
    with pytest.raises(ValueError, match="cannot fill"):
        split_cases(_ids(2), RATIOS, seed=0)


def test_duplicate_case_ids_raise() -> None:
    with pytest.raises(ValueError, match="duplicate") as exc:
        split_cases(["a", "b", "a", "c", "d"], RATIOS, seed=0)
    assert "'a'" in str(exc.value)


@pytest.mark.parametrize(
    "ratios",
    [{"train": 0.6, "val": 0.2, "test": 0.1}, {"train": 0.8, "val": 0.2, "test": 0.2}],
)
def test_ratios_not_summing_to_one_raise(ratios) -> None:
    with pytest.raises(ValueError, match="sum to 1"):
        split_cases(_ids(10), ratios, seed=0)


# ------------------------------------------------------------------ patients with several studies


def _studies(n_patients: int, seed: int, prefix: str = "PETCT") -> dict[str, str]:
    """case id -> patient id, AutoPET-like: most patients one study, some two or three."""
    rng = random.Random(seed)
    cases = {}
    for p in range(n_patients):
        patient = f"{prefix}_{p:04x}"
        for s in range(rng.choice([1] * 8 + [2, 3])):
            cases[f"{patient}_{2000 + s}-0{s + 1}-01"] = patient
    return cases


def test_studies_of_one_patient_never_land_in_two_parts() -> None:
    cases = _studies(900, seed=1)
    assert len(set(cases.values())) == 900 and len(cases) > 1000
    parts = split_cases(sorted(cases), {"train": 0.8, "val": 0.1, "test": 0.1}, seed=0, patients=cases)
    by_patient: dict[str, set[str]] = {}
    for case, part in parts.items():
        by_patient.setdefault(cases[case], set()).add(part)
    assert all(len(p) == 1 for p in by_patient.values())
    assert sorted(parts) == sorted(cases)
    counts = Counter(parts.values())
    assert counts["test"] > 50 and counts["val"] > 50


def test_adding_studies_and_patients_moves_no_case() -> None:
    cases = _studies(200, seed=2)
    before = split_cases(sorted(cases), RATIOS, seed=0, patients=cases)
    more = dict(cases)
    more.update(_studies(40, seed=3, prefix="LATE"))
    patient = next(iter(cases.values()))
    more[f"{patient}_2010-01-01"] = patient  # a new study of a known patient
    after = split_cases(sorted(more), RATIOS, seed=0, patients=more)
    assert {c: after[c] for c in cases} == before
    assert after[f"{patient}_2010-01-01"] == before[next(c for c in cases if cases[c] == patient)]


def test_one_study_per_patient_splits_as_by_case_id() -> None:
    ids = _ids(60)
    assert split_cases(ids, RATIOS, seed=4, patients={c: c for c in ids}) == split_cases(ids, RATIOS, seed=4)


@pytest.mark.parametrize("seed", range(10))
def test_small_cohort_fills_every_part_with_whole_patients(seed: int) -> None:
    cases = {f"p{p}_s{s}": f"p{p}" for p in range(4) for s in range(3 if p == 0 else 1)}
    parts = split_cases(sorted(cases), RATIOS, seed=seed, patients=cases)
    assert {parts[c] for c in cases if cases[c] == "p0"} == {parts["p0_s0"]}
    assert set(parts.values()) == set(PARTS)
    with pytest.raises(ValueError, match="2 patients cannot fill"):
        split_cases(["a_1", "a_2", "b_1"], RATIOS, seed=seed, patients={"a_1": "a", "a_2": "a", "b_1": "b"})


def test_split_table_has_a_patient_column(tmp_path) -> None:
    rows = [{"case_id": "b_1", "patient_id": "b"}, {"case_id": "a_2", "patient_id": "a"},
            {"case_id": "a_1", "patient_id": "a"}, {"case_id": "c", "patient_id": ""}]
    table = split_table(rows, {"train": 0.4, "val": 0.3, "test": 0.3}, seed=0)
    assert SPLIT_COLUMNS == ["case_id", "patient_id", "part"] and all(list(r) == SPLIT_COLUMNS for r in table)
    assert [(r["case_id"], r["patient_id"]) for r in table] == [("a_1", "a"), ("a_2", "a"), ("b_1", "b"), ("c", "c")]
    assert table[0]["part"] == table[1]["part"]


def test_an_unpaired_pair_of_tiny_cohorts_sharing_patients_is_refused_before_training(tmp_path) -> None:
    """One hospital's CT (3 patients) and MR (4, the same ids and one more): filling the tiny cohorts'
    empty parts puts phantom_000 in the CT's test part and the MR's train part. The generator would learn
    that patient's MR and be tested on its CT label map. Large cohorts keep every shared patient in one part."""
    from medsynth.data.split import check_unpaired_splits, crossed_patients
    from medsynth.io.tables import write_tsv

    ratios = {"train": 0.5, "val": 0.25, "test": 0.25}
    ct = split_table([{"case_id": f"phantom_{i:03d}"} for i in range(3)], ratios, 0)
    mr = split_table([{"case_id": f"phantom_{i:03d}"} for i in range(4)], ratios, 0)
    crossed = crossed_patients(ct, mr)
    assert ("phantom_000", "test", "train") in crossed
    write_tsv(tmp_path / "ct.tsv", ct, SPLIT_COLUMNS)
    write_tsv(tmp_path / "mr.tsv", mr, SPLIT_COLUMNS)
    with pytest.raises(ValueError, match=r"ct.tsv and .*mr.tsv: patient\(s\) phantom_000 \(test in the label "
                                         r"dataset, train in the image dataset\)"):
        check_unpaired_splits(tmp_path / "ct.tsv", tmp_path / "mr.tsv")
    big_ct = split_table([{"case_id": f"p{i:03d}"} for i in range(200)], ratios, 0)
    big_mr = split_table([{"case_id": f"p{i:03d}"} for i in range(50, 300)], ratios, 0)
    assert crossed_patients(big_ct, big_mr) == []
    write_tsv(tmp_path / "big_ct.tsv", big_ct, SPLIT_COLUMNS)
    write_tsv(tmp_path / "big_mr.tsv", big_mr, SPLIT_COLUMNS)
    check_unpaired_splits(tmp_path / "big_ct.tsv", tmp_path / "big_mr.tsv")  # no error


def test_an_unpaired_patient_held_out_as_val_in_one_dataset_and_test_in_the_other_is_refused(tmp_path) -> None:
    """No train part involved, but P02's MR (val in the image dataset) would select the checkpoint that is
    then tested on P02's label maps (test in the label dataset)."""
    from medsynth.data.split import check_unpaired_splits, crossed_patients
    from medsynth.io.tables import write_tsv

    ratios = {"train": 0.6, "val": 0.2, "test": 0.2}
    labels = split_table([{"case_id": p} for p in ("P02", "P05", "P06", "P11")], ratios, 0)
    images = split_table([{"case_id": p} for p in ("P01", "P02", "P03")], ratios, 0)
    assert crossed_patients(labels, images) == [("P02", "test", "val")]
    write_tsv(tmp_path / "labels.tsv", labels, SPLIT_COLUMNS)
    write_tsv(tmp_path / "images.tsv", images, SPLIT_COLUMNS)
    with pytest.raises(ValueError, match=r"P02 \(test in the label dataset, val in the image dataset\) are in "
                                         r"different parts of the two datasets, so the generator would learn "
                                         r"from, or be selected by"):
        check_unpaired_splits(tmp_path / "labels.tsv", tmp_path / "images.tsv")


def test_a_fine_tuning_whose_source_trained_on_a_patient_it_holds_out_is_refused(tmp_path) -> None:
    """Experiment pre trains on big (4 patients), ft fine-tunes from it on small (3, the same ids): the
    tiny cohorts' splits put phantom_000 in big's train part and small's test part."""
    from medsynth.data.split import check_training_patients, trained_then_held_out
    from medsynth.io.tables import write_tsv

    ratios = {"train": 0.5, "val": 0.25, "test": 0.25}
    for name, n in (("big", 4), ("small", 3)):
        write_tsv(tmp_path / f"{name}.tsv", split_table([{"case_id": f"phantom_{i:03d}"} for i in range(n)],
                                                       ratios, 0), SPLIT_COLUMNS)
    leaked = trained_then_held_out([tmp_path / "big.tsv"], [tmp_path / "small.tsv"])
    assert ("phantom_000", "test", str(tmp_path / "small.tsv")) in leaked
    with pytest.raises(ValueError, match=r"train.init_from results/select/pre/generator.pt: .* patient\(s\) "
                                         r"phantom_000 \(test in .*small.tsv\)"):
        check_training_patients(tmp_path / "small.tsv", None, "results/select/pre/generator.pt",
                                str(tmp_path / "big.tsv"))
    # The same patients split the same way: nothing to refuse.
    check_training_patients(tmp_path / "big.tsv", None, "results/select/pre/generator.pt", [tmp_path / "big.tsv"])
    check_training_patients(tmp_path / "small.tsv")  # no source, paired: nothing to check


def test_a_fine_tuning_whose_sources_selected_by_a_patient_it_tests_on_is_refused(tmp_path) -> None:
    """Up a chain (a -> b -> this run): P1 was val for a, whose best checkpoint it chose; this run tests on
    P1. P2, val both there and here, and P3, trained on there and here, are no leak."""
    from medsynth.data.split import check_training_patients, trained_then_held_out
    from medsynth.io.tables import write_tsv

    def table(name: str, parts: dict[str, str]) -> Path:
        rows = [{"case_id": p, "patient_id": p, "part": part} for p, part in parts.items()]
        return write_tsv(tmp_path / f"{name}.tsv", rows, SPLIT_COLUMNS)

    a = table("a", {"P1": "val", "P2": "val", "P3": "train"})
    b = table("b", {"P4": "train"})
    own = table("own", {"P1": "test", "P2": "val", "P3": "train", "P4": "train"})
    assert trained_then_held_out([a, b], [own]) == [("P1", "test", str(own))]
    with pytest.raises(ValueError, match=r"\(or one it was fine-tuned from\) was trained on, or selected by, "
                                         r"patient\(s\) P1 \(test in "):
        check_training_patients(own, None, "results/select/b/generator.pt", [a, b])


def _study_table(tmp_path, patients: dict[str, str], same: tuple[str, str] | None = None,
                 listed_twice: bool = False) -> list[dict[str, str]]:
    """Rows of a read cases table whose cases have their own label files, except that ``same``'s second
    case holds a copy of the first's (or, ``listed_twice``, names the first's file)."""
    rows = []
    for i, (case, patient) in enumerate(sorted(patients.items())):
        label = tmp_path / f"{case}.nii.gz"
        label.write_bytes(bytes([i]) * 64)  # one size for all: only the digest tells them apart
        rows.append({"case_id": case, "patient_id": patient, "image": "", "label": str(label)})
    if same:
        first, second = (next(r for r in rows if r["case_id"] == c) for c in same)
        if listed_twice:
            second["label"] = first["label"]
        else:
            (tmp_path / f"{second['case_id']}.nii.gz").write_bytes((tmp_path / f"{first['case_id']}.nii.gz").read_bytes())
    return rows


def test_a_study_under_two_patient_ids_in_two_parts_is_refused_naming_both(tmp_path) -> None:
    from medsynth.data.split import same_study_cases

    patients = {f"c{i}": f"p{i}" for i in range(6)}
    parts = {"c0": "train", "c1": "train", "c2": "val", "c3": "test", "c4": "train", "c5": "test"}
    for twice in (False, True):
        rows = _study_table(tmp_path, patients, same=("c1", "c3"), listed_twice=twice)
        with pytest.raises(ValueError, match=r"cases\.tsv: cases c1 \(patient p1, train\), c3 \(patient p3, test\) "
                                             r"are one study under two patient ids.*one patient_id"):
            same_study_cases(rows, parts, "cases.tsv")
    # val and test: selection would score a test study
    with pytest.raises(ValueError, match="c2 .*c3 "):
        same_study_cases(_study_table(tmp_path, patients, same=("c2", "c3")), parts, "cases.tsv")


def test_a_copy_within_one_part_or_one_patient_is_a_warning_or_nothing(tmp_path) -> None:
    from medsynth.data.split import same_study_cases

    parts = {"c0": "train", "c1": "train", "c2": "test"}
    rows = _study_table(tmp_path, {"c0": "p0", "c1": "p1", "c2": "p2"}, same=("c0", "c1"))
    (warning,) = same_study_cases(rows, parts, "cases.tsv")
    assert "c0 (patient p0, train), c1 (patient p1, train)" in warning and "both are in train" in warning
    # one patient's two studies with the same file: the split keeps them together already
    assert same_study_cases(_study_table(tmp_path, {"c0": "p0", "c1": "p0", "c2": "p2"}, same=("c0", "c1")),
                            parts, "cases.tsv") == []
    # files of one size but other bytes are other studies
    assert same_study_cases(_study_table(tmp_path, {"c0": "p0", "c1": "p1", "c2": "p2"}), parts, "cases.tsv") == []


def test_a_cases_table_without_patient_ids_is_said_to_split_by_case() -> None:
    """Without patient ids each case is its own patient: studies of one patient may be split apart, so the
    split log says so; one named patient (or a single case) is enough to say nothing."""
    rows = [{"case_id": f"s{i}", "patient_id": f"s{i}"} for i in range(3)]
    said = cases_as_patients(rows, "resources/raw/mine/cases.tsv")
    assert said.startswith("resources/raw/mine/cases.tsv: no patient ids") and "each of the 3 cases" in said
    assert cases_as_patients([*rows[:2], {"case_id": "s2", "patient_id": "p1"}], "t") is None
    assert cases_as_patients(rows[:1], "t") is None


def test_a_study_saved_again_under_another_patient_is_refused_by_its_voxels(tmp_path) -> None:
    """One study exported twice (.nii.gz and .nii, as int16): other bytes, the same label voxels on the same
    grid. In train and test it is refused; other studies on that grid (a cohort resampled to one) are not."""
    import nibabel as nib
    import numpy as np

    from medsynth.data.same_files import identical_groups
    from medsynth.data.split import same_study_cases

    affine = np.diag([-1.5, -1.5, 3.0, 1.0])
    rows = []
    for i, patient in enumerate(("p0", "p1", "p2")):
        label = np.random.default_rng(i).integers(0, 4, (10, 8, 3)).astype(np.uint8)
        path = tmp_path / f"c{i}.nii.gz"
        nib.save(nib.Nifti1Image(label, affine), path)
        rows.append({"case_id": f"c{i}", "patient_id": patient, "image": "", "label": str(path)})
    again = tmp_path / "c3.nii"
    nib.save(nib.Nifti1Image(np.asanyarray(nib.load(rows[1]["label"]).dataobj).astype(np.int16), affine), again)
    rows.append({"case_id": "c3", "patient_id": "p3", "image": "", "label": str(again)})
    assert identical_groups(r["label"] for r in rows) == []  # bytes cannot tell
    parts = {"c0": "train", "c1": "train", "c2": "test", "c3": "test"}
    with pytest.raises(ValueError, match=r"c1 \(patient p1, train\), c3 \(patient p3, test\) are one study under two "
                                         r"patient ids \(the same bytes, or the same voxels on the same grid"):
        same_study_cases(rows, parts, "cases.tsv")
    assert same_study_cases(rows, {**parts, "c3": "train"}, "cases.tsv")[0].startswith("cases.tsv: cases c1")


def _unpaired_pair(tmp_path, image_copy: str, copy_part: str) -> tuple[Path, Path, Path, Path]:
    """A labelled CT dataset (L1 test, L2 train) and an image-only one (I1 in ``copy_part``, I2 train) whose
    I1 image is L1's saved again (``image_copy``: "bytes", or "lps" for its voxels stored in LPS order)."""
    import nibabel as nib

    from medsynth.io.tables import write_tsv

    affine = np.diag([1.5, 1.5, 3.0, 1.0])
    rng = np.random.default_rng(0)
    files = {}
    for name in ("L1", "L2", "I2"):
        files[name] = tmp_path / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(rng.integers(-1000, 1000, (8, 6, 4)).astype(np.int16), affine), files[name])
    files["L1_label"], files["L2_label"] = tmp_path / "L1_label.nii.gz", tmp_path / "L2_label.nii.gz"
    for name in ("L1_label", "L2_label"):
        nib.save(nib.Nifti1Image(rng.integers(0, 3, (8, 6, 4)).astype(np.uint8), affine), files[name])
    files["I1"] = tmp_path / "I1.nii.gz"
    if image_copy == "bytes":
        files["I1"].write_bytes(files["L1"].read_bytes())
    else:
        original = nib.load(files["L1"])
        nib.save(original.as_reoriented(nib.orientations.axcodes2ornt("LPS")), files["I1"])
    columns = ["case_id", "patient_id", "image", "label"]
    label_cases = write_tsv(tmp_path / "labels_cases.tsv", [
        {"case_id": c, "patient_id": f"P{c}", "image": str(files[c]), "label": str(files[f"{c}_label"])}
        for c in ("L1", "L2")], columns)
    image_cases = write_tsv(tmp_path / "images_cases.tsv", [
        {"case_id": c, "patient_id": f"Q{c}", "image": str(files[c]), "label": ""} for c in ("I1", "I2")], columns)
    label_split = write_tsv(tmp_path / "labels_split.tsv", [
        {"case_id": "L1", "patient_id": "PL1", "part": "test"}, {"case_id": "L2", "patient_id": "PL2", "part": "train"}],
        SPLIT_COLUMNS)
    image_split = write_tsv(tmp_path / "images_split.tsv", [
        {"case_id": "I1", "patient_id": "QI1", "part": copy_part}, {"case_id": "I2", "patient_id": "QI2", "part": "train"}],
        SPLIT_COLUMNS)
    return label_split, image_split, label_cases, image_cases


@pytest.mark.parametrize("image_copy", ["bytes", "lps"])
def test_an_unpaired_study_in_both_datasets_under_other_ids_and_parts_is_refused(tmp_path, image_copy) -> None:
    """The label dataset's test CT saved again as a training image of the image dataset: the generator would
    learn the study it is tested on. Other ids, other patients: only the files tell."""
    from medsynth.data.split import check_training_patients

    tables = _unpaired_pair(tmp_path, image_copy, "train")
    with pytest.raises(ValueError, match=r"L1 \(test in .*labels_cases.tsv\), I1 \(train in .*images_cases.tsv\) "
                                         r"are one study in both datasets"):
        check_training_patients(tables[0], tables[1], cases=tables[2:])
    assert check_training_patients(tables[0], tables[1]) == []  # the splits alone cannot see it
    (tmp_path / "ok").mkdir()
    both_test = _unpaired_pair(tmp_path / "ok", image_copy, "test")
    (warning,) = check_training_patients(both_test[0], both_test[1], cases=both_test[2:])
    assert "both in test, which keeps the split sound" in warning


def test_studies_in_both_read_voxels_only_where_a_grid_is_in_both_datasets(tmp_path, monkeypatch) -> None:
    """A label dataset resampled to one grid is not read whole: no image of the other dataset shares it."""
    import nibabel as nib

    from medsynth.data import same_files
    from medsynth.data.split import studies_in_both

    affine = np.diag([1.5, 1.5, 3.0, 1.0])
    rows = {"label": [], "image": []}
    for role, n, shift in (("label", 3, 0.0), ("image", 2, 50.0)):
        moved = affine.copy()
        moved[2, 3] = shift
        for i in range(n):
            path = tmp_path / f"{role}{i}.nii.gz"
            nib.save(nib.Nifti1Image(np.full((4, 4, 2), i, np.int16), moved), path)
            rows[role].append({"case_id": f"{role}{i}", "image": str(path), "label": ""})
    read = []
    digest = same_files.voxel_digest
    monkeypatch.setattr(same_files, "voxel_digest", lambda path: read.append(path) or digest(path))
    assert studies_in_both(rows["label"], rows["image"]) == [] and read == []


def test_a_tiny_cohorts_move_is_said_and_can_be_undone_by_adding_a_patient() -> None:
    """Seed 1: every one of four patients falls in test by its number; P002 is moved to fill val, P003 train.
    A fifth patient, P004, falls in train, so P003 fills val instead and P002 goes back to test: a tiny
    cohort's split is not stable, so the split's log says where it moves a patient."""
    from medsynth.data.split import small_cohort_moves

    ratios = {"train": 0.6, "val": 0.2, "test": 0.2}
    four = split_table([{"case_id": f"P{i:03d}"} for i in range(4)], ratios, 1)
    five = split_table([{"case_id": f"P{i:03d}"} for i in range(5)], ratios, 1)
    assert [r["part"] for r in four] == ["test", "test", "val", "train"]
    assert [r["part"] for r in five] == ["test", "test", "test", "val", "train"]
    assert [m.split(";")[0] for m in small_cohort_moves(four, ratios, 1)] == [
        "split: no patient of 4 falls in val by its number, so P002 moves there from test",
        "split: no patient of 4 falls in train by its number, so P003 moves there from test"]
    assert small_cohort_moves(split_table([{"case_id": f"p{i:03d}"} for i in range(200)], ratios, 1), ratios, 1) == []


def test_one_dataset_on_both_sides_or_one_patient_in_both_is_no_study_in_both(tmp_path) -> None:
    """images_from: the label dataset shares every file with itself (it warned once per file); and a file
    listed by one patient in both datasets is that patient's, whose part crossed_patients keeps."""
    from medsynth.data.split import check_unpaired_splits
    from medsynth.io.tables import write_tsv

    label_split, _, label_cases, _ = _unpaired_pair(tmp_path, "bytes", "train")
    assert check_unpaired_splits(label_split, label_split, label_cases, label_cases) == []
    rows = read_cases(label_cases)
    same_patient = write_tsv(tmp_path / "same_patient.tsv", [{**r, "case_id": f"x{r['case_id']}"} for r in rows],
                             ["case_id", "patient_id", "image", "label"])
    split = write_tsv(tmp_path / "same_patient_split.tsv", [
        {"case_id": f"x{r['case_id']}", "patient_id": r["patient_id"], "part": p["part"]}
        for r, p in zip(rows, read_tsv(label_split))], SPLIT_COLUMNS)
    assert check_unpaired_splits(label_split, split, label_cases, same_patient) == []


def test_a_dicom_series_exported_again_under_another_patient_is_refused_by_its_series_uid(tmp_path) -> None:
    """One CT series exported twice to other folders, under other file names: bytes of no file match across
    the folders' listing, but the SeriesInstanceUID is the series' own. Another series is another study."""
    from medsynth.data.split import same_study_cases, studies_in_both
    from tests.helpers.dicom_series import write_series

    hu = np.random.default_rng(0).integers(-1000, 1000, (6, 5, 3)).astype(np.float32)
    write_series(tmp_path / "c0", hu, series_uid="1.2.3.10")
    write_series(tmp_path / "c1", hu + 1, series_uid="1.2.3.11")
    for i, f in enumerate(sorted((tmp_path / "c1").iterdir())):  # the export again: c2, other names
        (tmp_path / "c2").mkdir(exist_ok=True)
        (tmp_path / "c2" / f"slice_{i:03d}").write_bytes(f.read_bytes())
    rows = [{"case_id": f"c{i}", "patient_id": f"p{i}", "image": str(tmp_path / f"c{i}"), "label": ""}
            for i in range(3)]
    parts = {"c0": "train", "c1": "train", "c2": "test"}
    with pytest.raises(ValueError, match=r"c1 \(patient p1, train\), c2 \(patient p2, test\) are one study under two "
                                         r"patient ids \(.*one DICOM series"):
        same_study_cases(rows, parts, "cases.tsv")
    assert same_study_cases(rows[:2], parts, "cases.tsv") == []  # two series, two studies
    # A series the cases table names is the one compared (a folder holding several).
    named = [{**rows[0], "image_series": "1.2.3.11"}, rows[2]]
    assert len(same_study_cases(named, {"c0": "train", "c2": "train"}, "cases.tsv")) == 1
    # Unpaired: the label dataset's test series exported again as the image dataset's.
    (found,) = studies_in_both([{**rows[1], "label": ""}], [{**rows[2], "case_id": "i2"}])
    assert found[1] == [("label", "c1"), ("image", "i2")]
