"""Data stages on user data: a local folder found by pattern, an archive URL, bad cases with --keep-going."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from dicom_series import write_series
from tiny_workflow import planned_rules

from medsynth.data.phantom import PHANTOM_LABELS, write_cohort
from medsynth.io.nifti import load_volume, save_volume
from medsynth.io.tables import read_tsv

LABELS = [{"name": n, "values": [v]} for v, n in sorted(PHANTOM_LABELS.items())]


def cohort(folder: Path, n: int) -> Path:
    """A folder of NIfTI pairs laid out as <case>/ct.nii.gz + <case>/label.nii.gz."""
    write_cohort(folder, n, seed=5, shape=(48, 48, 6), spacing=(8.0, 8.0, 8.0))
    return folder


def dataset(**source) -> dict:
    return {"modality": "CT", "labels": LABELS, "preprocess": {"spacing_xy": 12.0}, **source}


def data_config(ds: dict) -> dict:
    return {"datasets": {"mine": ds}, "slice": {"size": 32},
            "split": {"seed": 0, "ratios": {"train": 0.5, "val": 0.25, "test": 0.25}}}


@pytest.mark.slow
def test_local_folder_with_a_bad_case_and_keep_going(tmp_path, snakemake):
    root = cohort(tmp_path / "data", 4)
    # Case phantom_002: a truncated gzip, as from an interrupted copy.
    bad = root / "phantom_002" / "ct.nii.gz"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    # Case phantom_003: label values outside the table.
    lab = load_volume(root / "phantom_003" / "label.nii.gz")
    save_volume(root / "phantom_003" / "label.nii.gz", np.where(lab.array == 9, 42, lab.array).astype(np.uint8),
                lab.affine)
    ds = dataset(source="local", local={"root": str(root)},
                 layout={"image": "{case}/ct.nii.gz", "label": "{case}/label.nii.gz"})
    work = tmp_path / "work"
    work.mkdir()
    result = snakemake(work, data_config(ds), "--keep-going")
    assert result.returncode != 0  # two cases failed ...
    for good in ("phantom_000", "phantom_001"):  # ... but the others finished
        assert (work / "results/slices/mine/cases" / good / "slices.npz").is_file()
        assert (work / "results/preprocess/mine" / good / "qc.png").is_file()
    log_002 = (work / "logs/preprocess/mine/phantom_002.log").read_text()
    assert str(bad.resolve()) in log_002 and "not a readable NIfTI" in log_002
    log_003 = (work / "logs/preprocess/mine/phantom_003.log").read_text()
    assert "[42]" in log_003 and "label.nii.gz" in log_003 and "label table" in log_003


@pytest.mark.slow
def test_archive_url_with_checksum_and_provided_masks(tmp_path, snakemake):
    root = cohort(tmp_path / "data", 4)
    for case in sorted(p for p in root.iterdir() if p.is_dir()):
        ct = load_volume(case / "ct.nii.gz")
        save_volume(case / "mask.nii.gz", (ct.array > -500).astype(np.uint8), ct.affine)
    archive = tmp_path / "cohort.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(root.rglob("*.nii.gz")):
            zf.write(f, "Cohort/" + f.relative_to(root).as_posix())
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    ds = dataset(source="url", url={"href": archive.resolve().as_uri(), "sha256": digest},
                 layout={"image": "Cohort/{case}/ct.nii.gz", "label": "Cohort/{case}/label.nii.gz",
                         "mask": "Cohort/{case}/mask.nii.gz"})
    work = tmp_path / "work"
    work.mkdir()
    result = snakemake(work, data_config(ds))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = read_tsv(work / "resources/raw/mine/cases.tsv")
    assert [r["case_id"] for r in rows] == [f"phantom_00{i}" for i in range(4)]
    assert all(r["mask"].endswith("mask.nii.gz") for r in rows)
    assert (work / "resources/archives/mine/cohort.zip").is_file()
    for part in ("train", "val", "test"):
        assert list((work / "results/slices/mine/oasis" / part / "images").glob("*.png"))
    meta = (work / "results/preprocess/mine/phantom_000/meta.json").read_text()
    assert "mask.nii.gz" in meta  # the provided mask was used

    # A wrong checksum stops the download with both hashes named and leaves no archive.
    ds["url"]["sha256"] = "0" * 64
    work2 = tmp_path / "work2"
    work2.mkdir()
    result = snakemake(work2, data_config(ds))
    assert result.returncode != 0
    log = (work2 / "logs/download/mine.log").read_text()
    assert digest in log and "0" * 64 in log
    assert not (work2 / "resources/archives/mine/cohort.zip").exists()


def _finished(work: Path, cases: list[str]) -> bool:
    return all((work / "results/slices/mine/cases" / c / "slices.npz").is_file() for c in cases)


@pytest.mark.slow
def test_a_missing_file_in_the_cases_table_fails_only_its_case(tmp_path, snakemake):
    root = cohort(tmp_path / "data", 4)
    lines = ["case_id\timage\tlabel"] + [f"phantom_00{i}\tphantom_00{i}/ct.nii.gz\tphantom_00{i}/label.nii.gz"
                                         for i in range(4)]
    lines[3] = lines[3].replace("phantom_002/label.nii.gz", "phantom_002/seg.nii.gz")  # not there
    table = root / "my_cases.tsv"
    table.write_text("\n".join(lines) + "\n")
    work = tmp_path / "work"
    work.mkdir()
    result = snakemake(work, data_config(dataset(source="local", local={"cases_table": str(table)})), "--keep-going")
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "Traceback" not in output, output[-3000:]
    assert _finished(work, ["phantom_000", "phantom_001", "phantom_003"])
    split = read_tsv(work / "results/split/mine/split.tsv")
    assert [r["case_id"] for r in split] == [f"phantom_00{i}" for i in range(4)]
    message = (work / "logs/case_check/mine/phantom_002.log").read_text()
    missing = str((root / "phantom_002" / "seg.nii.gz").resolve())
    assert f"{missing}: label file of case 'phantom_002' does not exist" in message and "line 4" in message
    assert missing in output
    assert f"{table}, line 4" in (work / "logs/download/mine.log").read_text()


@pytest.mark.slow
def test_a_file_where_a_case_folder_belongs_fails_only_that_case(tmp_path, snakemake):
    root = cohort(tmp_path / "data", 3)
    work = tmp_path / "work"
    blocker = work / "results/preprocess/mine/phantom_001"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("not a folder")
    ds = dataset(source="local", local={"root": str(root)},
                 layout={"image": "{case}/ct.nii.gz", "label": "{case}/label.nii.gz"})
    result = snakemake(work, data_config(ds), "--keep-going")
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "Traceback" not in output, output[-3000:]
    assert _finished(work, ["phantom_000", "phantom_002"])
    message = (work / "logs/case_check/mine/phantom_001.log").read_text()
    assert "results/preprocess/mine/phantom_001: a file where case 'phantom_001' needs an output folder" in message
    assert "move or delete it" in output
    assert blocker.read_text() == "not a folder"  # the file is the user's to move, not ours


@pytest.mark.slow
def test_split_keeps_the_studies_of_a_patient_together(tmp_path, snakemake):
    root = tmp_path / "data"
    for p in range(8):
        for s in range(1 + p % 3):
            for name in ("ct", "seg"):
                f = root / f"PETCT_{p:02d}" / f"200{s}-01-01" / f"{name}.nii.gz"
                f.parent.mkdir(parents=True, exist_ok=True)
                # Only the names matter up to the split, but each study its own bytes: the split refuses one
                # file's bytes under two patients (data.split.same_study_cases).
                f.write_bytes(f"study {p} {s} {name}".encode())
    ds = dataset(source="local", local={"root": str(root)},
                 layout={"image": "{patient}/{study}/ct.nii.gz", "label": "{patient}/{study}/seg.nii.gz"})
    work = tmp_path / "work"
    work.mkdir()
    result = snakemake(work, data_config(ds), "results/split/mine/split.tsv")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = work / "results/split/mine/split.tsv"
    assert table.read_text().splitlines()[0].split("\t") == ["case_id", "patient_id", "part"]
    rows = read_tsv(table)
    assert len(rows) == 15 and all(r["case_id"].startswith(r["patient_id"] + "_") for r in rows)
    parts: dict[str, set[str]] = {}
    for r in rows:
        parts.setdefault(r["patient_id"], set()).add(r["part"])
    assert len(parts) == 8 and all(len(p) == 1 for p in parts.values())
    assert {r["part"] for r in rows} == {"train", "val", "test"}


@pytest.mark.slow
def test_one_study_under_two_patient_ids_in_two_parts_stops_the_split(tmp_path, snakemake):
    """A study exported twice under two pseudonyms: the ids cannot tell, the bytes can. The split stops
    before anything trains on it, naming the cases, patients, parts and files, and writes no split.tsv."""
    from medsynth.data.split import split_cases

    root, names = tmp_path / "data", [f"PETCT_0{i}_a" for i in range(4)]
    for case in names:
        (root / case).mkdir(parents=True)
        for name in ("ct", "seg"):
            (root / case / f"{name}.nii.gz").write_bytes(f"{case} {name}".encode())
    config = data_config(dataset(source="local", local={"root": str(root)},
                                 layout={"image": "{case}/ct.nii.gz", "label": "{case}/seg.nii.gz"}))
    parts = split_cases(names, config["split"]["ratios"], config["split"]["seed"])
    trained, tested = min(c for c in names if parts[c] == "train"), min(c for c in names if parts[c] == "test")
    (root / tested / "seg.nii.gz").write_bytes((root / trained / "seg.nii.gz").read_bytes())
    work = tmp_path / "work"
    work.mkdir()
    result = snakemake(work, config, "results/split/mine/split.tsv")
    log = (work / "logs/split/mine.log").read_text()
    assert result.returncode != 0 and not (work / "results/split/mine/split.tsv").exists()
    listed = ", ".join(f"{c} (patient {c}, {parts[c]})" for c in sorted((trained, tested)))
    files = ", ".join(str(root / c / "seg.nii.gz") for c in sorted((trained, tested)))
    assert f"cases {listed} are one study under two patient ids (the same bytes, or the same voxels on the same grid, " \
           f"or one DICOM series: {files})" in log, log
    assert "Give these cases one patient_id" in log


@pytest.mark.slow
def test_an_edited_cases_listing_reruns_the_download_and_the_split(tmp_path, snakemake):
    """A curator fills in a patient id (the study joins a test patient), or a study is added to the folder:
    the config is unchanged, but a split kept from the old listing would train on a test patient's study.
    The order of rows and columns changes nothing."""
    root = tmp_path / "data"
    for case in ("PETCT_01_a", "PETCT_01_b", "PETCT_02_a", "PETCT_03_a"):
        for name in ("ct", "seg"):
            (root / case).mkdir(parents=True, exist_ok=True)
            (root / case / f"{name}.nii.gz").write_bytes(f"only the names matter up to the split: {case}".encode())
    rows = ["case_id\tpatient_id\timage\tlabel"] + [
        f"{c}\t{c}\t{c}/ct.nii.gz\t{c}/seg.nii.gz" for c in ("PETCT_01_a", "PETCT_01_b", "PETCT_02_a")]
    table = root / "cases.tsv"
    table.write_text("\n".join(rows) + "\n")
    configs = {"table": data_config(dataset(source="local", local={"cases_table": str(table)})),
               "folder": data_config(dataset(source="local", local={"root": str(root)},
                                             layout={"image": "{case}/ct.nii.gz", "label": "{case}/seg.nii.gz"}))}
    for name, config in configs.items():
        (tmp_path / name).mkdir()
        result = snakemake(tmp_path / name, config, "results/split/mine/split.tsv")
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    def planned(name: str) -> set[str]:
        result = snakemake(tmp_path / name, configs[name], "results/split/mine/split.tsv", "-n")
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return planned_rules(result)

    swapped = ["\t".join(line.split("\t")[::-1]) for line in [rows[0], *reversed(rows[1:])]]  # columns, rows
    table.write_text("\n".join(swapped) + "\n")
    assert planned("table") == set()
    table.write_text("\n".join(rows[:2] + [rows[2].replace("PETCT_01_b\tPETCT_01_b", "PETCT_01_b\tPETCT_01")]
                               + rows[3:]) + "\n")
    assert planned("table") == {"download", "split"}
    assert planned("folder") == set()
    (root / "PETCT_04_a").mkdir()
    for name in ("ct", "seg"):
        (root / "PETCT_04_a" / f"{name}.nii.gz").write_bytes(b"a study added")
    assert planned("folder") == {"download", "split"}


@pytest.mark.slow
def test_a_download_that_writes_the_same_table_again_reruns_the_split_and_nothing_after(tmp_path, snakemake):
    """The cases table moved (absolute paths now): the download reruns and writes the same cases. Snakemake
    9.27 then dropped the split it had planned (its input's content unchanged) and started the jobs after it
    with their inputs unresolved; the split reruns with the download, and nothing after it reruns."""
    root = cohort(tmp_path / "data", 4)
    rows = [f"phantom_00{i}\tphantom_00{i}/ct.nii.gz\tphantom_00{i}/label.nii.gz" for i in range(4)]
    (root / "cases.tsv").write_text("case_id\timage\tlabel\n" + "\n".join(rows) + "\n")
    work, target = tmp_path / "work", "results/slices/mine/oasis"
    work.mkdir()
    first = snakemake(work, data_config(dataset(source="local", local={"cases_table": str(root / "cases.tsv")})), target)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    split = (work / "results/split/mine/split.tsv").read_text()
    moved = tmp_path / "tables" / "cases.tsv"
    moved.parent.mkdir()
    moved.write_text("case_id\timage\tlabel\n" + "".join(
        f"phantom_00{i}\t{root}/phantom_00{i}/ct.nii.gz\t{root}/phantom_00{i}/label.nii.gz\n" for i in range(4)))
    second = snakemake(work, data_config(dataset(source="local", local={"cases_table": str(moved)})), target)
    output = second.stdout + second.stderr
    assert second.returncode == 0 and "Traceback" not in output, output[-3000:]
    ran = {line.split()[-1].rstrip(":") for line in output.splitlines()
           if line.startswith(("rule ", "localrule ", "checkpoint ", "localcheckpoint "))}
    assert ran == {"download", "split"}
    assert (work / "results/split/mine/split.tsv").read_text() == split
    # Forced (or its script changed by an update): the same, where the split had been dropped and the jobs
    # after it started on unresolved inputs.
    third = snakemake(work, data_config(dataset(source="local", local={"cases_table": str(moved)})), target,
                      "--forcerun", "download")
    output = third.stdout + third.stderr
    assert third.returncode == 0 and "Traceback" not in output, output[-3000:]
    ran = {line.split()[-1].rstrip(":") for line in output.splitlines()
           if line.startswith(("rule ", "localrule ", "checkpoint ", "localcheckpoint "))}
    assert ran == {"download", "split"}


def test_a_deleted_cases_table_is_named_not_silently_ignored(tmp_path, snakemake):
    """A scratch purge took resources/raw but not results: Snakemake 9.27 planned nothing after the missing
    checkpoint table ("Nothing to be done", a changed setting ignored). Named, with the way out, which works."""
    root = cohort(tmp_path / "data", 4)
    rows = [f"phantom_00{i}\tphantom_00{i}/ct.nii.gz\tphantom_00{i}/label.nii.gz" for i in range(4)]
    (root / "cases.tsv").write_text("case_id\timage\tlabel\n" + "\n".join(rows) + "\n")
    config = data_config(dataset(source="local", local={"cases_table": str(root / "cases.tsv")}))
    work, target = tmp_path / "work", "results/slices/mine/oasis"
    work.mkdir()
    assert snakemake(work, config, target).returncode == 0
    (work / "resources/raw/mine/cases.tsv").unlink()
    stopped = snakemake(work, config, target, "-n")
    output = stopped.stdout + stopped.stderr
    assert stopped.returncode != 0 and "Job stats" not in output
    assert ("resources/raw/mine/cases.tsv is missing, but results/split/mine/split.tsv (made after it) is there"
            in output and "with the target resources/raw/mine/cases.tsv" in output), output[-3000:]
    assert snakemake(work, config, "resources/raw/mine/cases.tsv").returncode == 0
    again = snakemake(work, config, target)
    output = again.stdout + again.stderr
    assert again.returncode == 0, output[-3000:]
    assert {line.split()[-1].rstrip(":") for line in output.splitlines()
            if line.startswith(("rule ", "localrule ", "checkpoint ", "localcheckpoint "))} == {"split"}


def test_a_generate_from_dataset_without_its_table_after_generation_is_named(tmp_path, snakemake):
    """A generate_from dataset added to an experiment that has generated (or its table purged): Snakemake 9.27
    planned nothing for the targeted export ("Nothing to be done"), which kept shipping the old cases without
    the new dataset's. Named, with the way out."""
    root = cohort(tmp_path / "data", 2)
    config = data_config(dataset(source="phantom", phantom={"n_cases": 4, "seed": 1, "shape": [48, 48, 8],
                                                             "spacing": [8.0, 8.0, 8.0]}))
    config["datasets"]["lab"] = dataset(source="local", local={"root": str(root)},
                                        layout={"label": "{case}/label.nii.gz"})
    config["experiments"] = {"e": {"dataset": "mine", "generate_from": ["lab"], "train": {"model": "tiny"}}}
    work = tmp_path / "work"
    (work / "results/generate/e").mkdir(parents=True)
    (work / "results/generate/e/manifest.tsv").write_text("case_id\n")  # generated before lab was added
    stopped = snakemake(work, config, "results/export/e/nnUNet_raw", "-n")
    output = stopped.stdout + stopped.stderr
    assert stopped.returncode != 0 and "Job stats" not in output
    assert ("resources/raw/lab/cases.tsv is missing, but results/generate/e/manifest.tsv (made after it) is there"
            in output and "with the target resources/raw/lab/cases.tsv" in output), output[-3000:]
    asked = snakemake(work, config, "resources/raw/lab/cases.tsv", "-n")
    assert asked.returncode == 0, (asked.stdout + asked.stderr)[-3000:]


def test_label_tables_and_slice_size_are_checked_when_the_config_is_loaded(tmp_path, snakemake):
    table = tmp_path / "labels.yaml"
    table.write_text(yaml.safe_dump([*LABELS, {"name": "again", "values": [3]}]))
    config = data_config(dataset(source="phantom", labels=[*LABELS[:3], {"name": "twice", "values": [1]}]))
    config["datasets"]["other"] = dataset(source="phantom", labels=str(table))
    config["slice"]["size"] = 36
    config["experiments"] = {"e": {"dataset": "mine", "train": {"model": "tiny"}}}
    result = snakemake(tmp_path, config, "-n")
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "Job stats" not in output
    assert "config: datasets.mine.labels: label value 1 is listed for both" in output
    assert f"config: datasets.other.labels (from {table}): label value 3 is listed for both" in output
    assert "slice.size with experiments.e.train.model = 'tiny'" in output and "32 or 40" in output


@pytest.mark.slow
def test_a_cohort_of_dicom_series_runs_as_its_nifti_twin(tmp_path, snakemake):
    """Images as DICOM series folders (one holding two series, picked by the table's image_series)
    give the same preprocessed slices as the same images as NIfTI."""
    root = cohort(tmp_path / "data", 4)
    nifti_lines, dicom_lines = ["case_id\timage\tlabel"], ["case_id\timage\tlabel\timage_series"]
    for i in range(4):
        case = root / f"phantom_00{i}"
        ct = load_volume(case / "ct.nii.gz")
        hu = np.rint(ct.array).astype(np.int16)  # what a CT series stores: integers
        save_volume(case / "ct_int.nii.gz", hu, ct.affine)
        lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ ct.affine
        spacing = np.linalg.norm(lps[:3, :3], axis=0)
        uid = f"1.2.826.0.1.3680043.2.1125.8.{i}"
        write_series(case / "dicom", hu.astype(np.float32), spacing, lps[:3, :3] / spacing, lps[:3, 3],
                     series_uid=uid, slope=1.0, intercept=-1024.0)
        if i == 1:  # a second series in the same folder: the table says which one
            other = write_series(tmp_path / "other", hu.astype(np.float32) + 50, spacing, lps[:3, :3] / spacing,
                                 lps[:3, 3], series_uid=uid + ".2", slope=1.0, intercept=-1024.0)
            for f in other:
                f.rename(case / "dicom" / f"b{f.name}")
        nifti_lines.append(f"phantom_00{i}\tphantom_00{i}/ct_int.nii.gz\tphantom_00{i}/label.nii.gz")
        dicom_lines.append(f"phantom_00{i}\tphantom_00{i}/dicom\tphantom_00{i}/label.nii.gz\t{uid if i == 1 else ''}")
    (root / "nifti.tsv").write_text("\n".join(nifti_lines) + "\n")
    (root / "dicom.tsv").write_text("\n".join(dicom_lines) + "\n")
    config = data_config(dataset(source="local", local={"cases_table": str(root / "nifti.tsv")}))
    config["datasets"]["dicom"] = dataset(source="local", local={"cases_table": str(root / "dicom.tsv")})
    work = tmp_path / "work"
    work.mkdir()
    result = snakemake(work, config)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for i in range(4):
        with np.load(work / f"results/slices/mine/cases/phantom_00{i}/slices.npz") as a, \
                np.load(work / f"results/slices/dicom/cases/phantom_00{i}/slices.npz") as b:
            np.testing.assert_array_equal(a["labels"], b["labels"])
            np.testing.assert_array_equal(a["z"], b["z"])
            np.testing.assert_allclose(a["images"].astype(np.float32), b["images"].astype(np.float32), atol=2e-3)
    assert read_tsv(work / "results/split/dicom/split.tsv") == read_tsv(work / "results/split/mine/split.tsv")
    meta = (work / "results/preprocess/dicom/phantom_001/meta.json").read_text()
    assert "phantom_001/dicom" in meta and "1.2.826.0.1.3680043.2.1125.8.1" in meta
