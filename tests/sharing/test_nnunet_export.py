"""nnU-Net v2 export: the folder layout, labels and folds, checked by nnU-Net's own integrity check."""

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from medsynth.config.checks import export_errors
from medsynth.data.labels import LabelTable
from medsynth.sharing.nnunet_export import (ExportCase, channel_names, export_experiment, nnunet_labels, patient_folds,
                                            write_dataset)
from medsynth.io.nifti import load_volume, save_volume
from medsynth.io.tables import write_tsv

# A TotalSegmentator-like table: label values 0/5/7, no body class of its own (derived, last).
TABLE = LabelTable.from_config([{"name": "background", "values": [0]}, {"name": "liver", "values": [5]},
                                {"name": "kidney", "values": [7]}])
# Stored LPS-like (x and y flipped) with an origin: a real scanner affine, not the identity.
AFFINE = np.array([[-1.5, 0, 0, 120.0], [0, -1.5, 0, 90.0], [0, 0, 3.0, -40.0], [0, 0, 0, 1]])


def _case(tmp: Path, name: str, seed: int, raw: bool) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    hu = rng.normal(40, 30, (12, 10, 6)).astype(np.float32)
    label = np.zeros((12, 10, 6), np.uint8)
    label[3:7, 2:6, 1:5] = 5 if raw else 1  # raw: the dataset's value 5; generated: class id 1 (liver)
    label[8:10, 6:9, 2:4] = 7 if raw else 2
    return save_volume(tmp / f"{name}_img.nii.gz", hu, AFFINE), save_volume(tmp / f"{name}_lab.nii.gz", label, AFFINE)


@pytest.fixture
def cases(tmp_path: Path) -> list[ExportCase]:
    out = []
    for p, patient in enumerate(["p0", "p1", "p2"]):
        for k in range(2):  # K = 2 synthetic variants per source case
            img, lab = _case(tmp_path, f"{patient}_syn{k}", 10 * p + k, raw=False)
            out.append(ExportCase(f"{patient}_syn{k:02d}", img, lab, patient, provenance={"synthetic": True, "seed": k},
                                  background=-1000.0))
        img, lab = _case(tmp_path, f"{patient}_real", 10 * p + 9, raw=True)
        out.append(ExportCase(f"{patient}_real", img, lab, patient, raw_label=TABLE, provenance={"synthetic": False}))
    return out


def test_labels_are_consecutive_and_leave_out_a_derived_body_class() -> None:
    assert TABLE.names == ("background", "liver", "kidney", "body")  # body derived: no label value maps to it
    assert nnunet_labels(TABLE) == {"background": 0, "liver": 1, "kidney": 2}
    own = LabelTable.from_config([{"name": "background", "values": [0]}, {"name": "body", "values": [1]},
                                  {"name": "liver", "values": [3]}])
    assert nnunet_labels(own) == {"background": 0, "body": 1, "liver": 2}  # a body the labels hold stays
    assert channel_names("CT") == {"0": "CT"} and channel_names("MR") == {"0": "MR"}


def test_folds_keep_every_case_of_a_patient_together(cases: list[ExportCase]) -> None:
    folds = patient_folds(cases, 5)
    assert len(folds) == 3  # no more folds than patients
    seen = [i for f in folds for i in f["val"]]
    assert sorted(seen) == sorted(c.identifier for c in cases)  # each case validates exactly once
    for f in folds:
        val_patients = {i.split("_")[0] for i in f["val"]}
        assert val_patients.isdisjoint({i.split("_")[0] for i in f["train"]})
    with pytest.raises(ValueError, match="at least 2"):
        patient_folds([c for c in cases if c.patient == "p0"], 5)


def test_written_dataset_passes_nnunets_integrity_check(tmp_path: Path, cases: list[ExportCase]) -> None:
    verify = pytest.importorskip("nnunetv2.experiment_planning.verify_dataset_integrity").verify_dataset_integrity
    folder = write_dataset(tmp_path / "raw" / "Dataset500_Demo", cases, TABLE, "CT", {"experiment": "demo"})
    verify(str(folder), num_processes=1)  # nnU-Net's own reader and rules: raises on any problem

    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "CT"} and meta["numTraining"] == 9 and meta["file_ending"] == ".nii.gz"
    assert meta["labels"] == {"background": 0, "liver": 1, "kidney": 2}
    assert meta["medsynth"]["cases"]["p1_syn01"] == {"patient": "p1", "synthetic": True, "seed": 1}
    img = load_volume(folder / "imagesTr" / "p1_real_0000.nii.gz")
    lab = load_volume(folder / "labelsTr" / "p1_real.nii.gz")
    assert img.array.dtype == np.int16 and lab.array.dtype == np.uint8  # CT in HU as int16
    np.testing.assert_allclose(img.affine, AFFINE)  # the source affine, not a canonical one
    np.testing.assert_allclose(lab.affine, AFFINE)
    assert set(np.unique(lab.array)) == {0, 1, 2}  # the real map's values 5 and 7 went through the table
    src = load_volume(next(c for c in cases if c.identifier == "p1_real").image).array
    np.testing.assert_array_equal(img.array, np.rint(src).astype(np.int16))
    splits = json.loads((folder / "splits_final.json").read_text())
    assert len(splits) == 3 and all(set(f) == {"train", "val"} for f in splits)
    # Three patients, export.folds 5: nnU-Net's folds 3 and 4 would split by case at random; said, with the fix.
    assert meta["medsynth"]["splits_note"].startswith("3 source patients: splits_final.json holds 3 folds, not "
                                                      "export.folds=5; train folds 0-2 only")
    five = write_dataset(tmp_path / "raw" / "Dataset501_Five", cases, TABLE, "CT", {"experiment": "demo"}, n_folds=3)
    assert "splits_note" not in json.loads((five / "dataset.json").read_text())["medsynth"]
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["Dataset500_Demo", "Dataset501_Five"]


def test_a_killed_export_leaves_no_folder_nnunet_would_take_for_the_dataset(tmp_path: Path, cases: list[ExportCase],
                                                                          monkeypatch) -> None:
    """nnU-Net finds dataset 500 as the folder of nnUNet_raw named Dataset500*: the folder an export builds
    in must not be one (a killed job leaves it), and it holds dataset.json only once everything else is there."""
    import medsynth.sharing.nnunet_export as export

    dumps = json.dumps

    def killed(obj, *args, **kwargs):
        if isinstance(obj, list):  # the job is killed while writing splits_final.json
            raise KeyboardInterrupt
        return dumps(obj, *args, **kwargs)

    monkeypatch.setattr(export.json, "dumps", killed)
    with pytest.raises(KeyboardInterrupt):
        write_dataset(tmp_path / "raw" / "Dataset500_Demo", cases, TABLE, "CT", {"experiment": "demo"})
    left = list((tmp_path / "raw").iterdir())
    assert left and not [p for p in left if p.name.startswith("Dataset500")]
    assert not [p for p in left if (p / "dataset.json").exists()]


def test_one_source_patient_is_exported_without_folds_and_says_why(tmp_path: Path, cases: list[ExportCase]) -> None:
    """A 1/1/1 split (or an audit refusing every other patient): no fold by patient exists. The dataset is
    written, nnU-Net-valid, without splits_final.json, and dataset.json says what to do instead."""
    verify = pytest.importorskip("nnunetv2.experiment_planning.verify_dataset_integrity").verify_dataset_integrity
    one = [c for c in cases if c.patient == "p0"]
    folder = write_dataset(tmp_path / "raw" / "Dataset502_One", one, TABLE, "CT", {"experiment": "demo"})
    verify(str(folder), num_processes=1)
    assert not (folder / "splits_final.json").exists() and len(list((folder / "imagesTr").iterdir())) == 3
    note = json.loads((folder / "dataset.json").read_text())["medsynth"]["splits_note"]
    assert "one source patient" in note and "all" in note


def test_a_table_whose_class_0_has_another_name_still_declares_nnunets_background(tmp_path: Path,
                                                                                   cases: list[ExportCase]) -> None:
    verify = pytest.importorskip("nnunetv2.experiment_planning.verify_dataset_integrity").verify_dataset_integrity
    unlabelled = LabelTable.from_config([{"name": "unlabelled", "values": [0]}, {"name": "liver", "values": [5]},
                                         {"name": "kidney", "values": [7]}])
    real = [replace(c, raw_label=unlabelled) if c.raw_label is not None else c for c in cases]
    folder = write_dataset(tmp_path / "raw" / "Dataset501_Other", real, unlabelled, "CT", {})
    verify(str(folder), num_processes=1)  # raised "Background label not declared" with the table's own name
    assert json.loads((folder / "dataset.json").read_text())["labels"] == {"background": 0, "liver": 1, "kidney": 2}
    clash = LabelTable.from_config([{"name": "unlabelled", "values": [0]}, {"name": "background", "values": [5]}])
    with pytest.raises(ValueError, match="'background'.*class 1"):
        nnunet_labels(clash)


def test_a_label_map_off_its_images_grid_is_refused_naming_the_file(tmp_path: Path, cases: list[ExportCase]) -> None:
    shifted = AFFINE.copy()
    shifted[0, 3] += 5.0  # the same voxels 5 mm to the side
    bad = save_volume(tmp_path / "shifted.nii.gz", load_volume(cases[0].label).array, shifted)
    broken = [ExportCase("p0_syn00", cases[0].image, bad, "p0"), *cases[1:]]
    with pytest.raises(ValueError, match="shifted.nii.gz.*not on the grid"):
        write_dataset(tmp_path / "Dataset500_Demo", broken, TABLE, "CT", {})
    assert not (tmp_path / "Dataset500_Demo").exists()


def test_config_checks_name_the_keys() -> None:
    base = {"experiments": {"a": {}, "b": {}}, "export": {"first_id": 500, "splits": ["train"]},
            "generate": {"splits": ["train", "test"]}}
    assert export_errors(base) == []
    assert any("export.splits" in e and "generate.splits" in e
               for e in export_errors({**base, "generate": {"splits": ["test"]}}))
    assert any("add test" in e for e in export_errors({**base, "generate": {"splits": ["train"]}}))
    same = {**base, "experiments": {"a": {"export_id": 3}, "b": {"export_id": 3}}}
    assert any("same nnU-Net dataset id 003" in e and "export_id" in e for e in export_errors(same))


def test_real_and_synthetic_unpaired_cases_need_one_label_table() -> None:
    labels = [{"name": "background", "values": [0]}, {"name": "liver", "values": [1]}]
    config = {"datasets": {"ct": {"labels": labels}, "mr": {"labels": [labels[0], {"name": "spleen", "values": [1]}]}},
              "experiments": {"u": {"dataset": "ct", "images_from": "mr", "train": {"mode": "unpaired"}}},
              "export": {"include_real": True}, "generate": {"splits": ["train", "test"]}}
    (err,) = export_errors(config)
    assert "export.include_real" in err and "datasets.mr" in err and "spleen" in err
    config["datasets"]["mr"]["labels"] = labels
    assert export_errors(config) == []


def test_a_synthetic_case_without_tissue_under_its_labels_is_refused_naming_it(tmp_path: Path,
                                                                               cases: list[ExportCase]) -> None:
    """An nnU-Net trained on labelled air would learn that liver can be air: more than 1 % of a case's
    labelled voxels at the background value refuses the case."""
    image = load_volume(cases[0].image)
    label = load_volume(cases[0].label).array
    hu = image.array.copy()
    air = np.argwhere(label > 0)
    hu[tuple(air[: len(air) // 100].T)] = -1000  # 1 %: edge voxels, allowed
    ok = save_volume(tmp_path / "ok.nii.gz", hu, AFFINE)
    write_dataset(tmp_path / "Dataset500_Ok", [ExportCase("p0_syn00", ok, cases[0].label, "p0", background=-1000.0),
                                               *cases[1:]], TABLE, "CT", {})
    hu[tuple(air[: len(air) // 10].T)] = -1000  # a tenth of the labelled tissue is air
    bad = save_volume(tmp_path / "bad.nii.gz", hu, AFFINE)
    broken = [ExportCase("p0_syn00", bad, cases[0].label, "p0", background=-1000.0), *cases[1:]]
    with pytest.raises(ValueError, match=r"bad.nii.gz: 1?\d\.\d% of the labelled voxels of p0_syn00 hold the background"):
        write_dataset(tmp_path / "Dataset500_Demo", broken, TABLE, "CT", {})
    real = [ExportCase("p0_scan", bad, cases[0].label, "p0"), *cases[1:]]  # a real scan is shipped as it is
    write_dataset(tmp_path / "Dataset501_Real", real, TABLE, "CT", {})


def _manifest(tmp_path: Path, cases: list[ExportCase]) -> Path:
    """generate's manifest for the synthetic cases of the fixture: p0 and p1 from train, p2 from generate_from."""
    rows = [{"case_id": c.identifier.rsplit("_syn", 1)[0], "dataset": "ct", "source_case": c.patient,
             "patient_id": c.patient, "part": "generate_from" if c.patient == "p2" else "train",
             "sample": int(c.identifier[-2:]), "seed": 0, "volume": str(c.image), "label": str(c.label), "background": -1000.0}
            for c in cases if c.provenance.get("synthetic")]
    return write_tsv(tmp_path / "manifest.tsv", rows, list(rows[0]))


def _split(path: Path, parts: dict[str, str]) -> Path:
    return write_tsv(path, [{"case_id": p, "patient_id": p, "part": q} for p, q in parts.items()],
                     ["case_id", "patient_id", "part"])


def test_the_export_refuses_a_case_of_a_test_patient_naming_case_patient_and_dataset(tmp_path: Path,
                                                                                      cases: list[ExportCase]) -> None:
    manifest = _manifest(tmp_path, cases)
    labels = [{"name": "background", "values": [0]}, {"name": "liver", "values": [1]}, {"name": "kidney", "values": [2]}]
    settings = {"splits": ["train"], "include_real": False}
    naming = {"export": {"first_id": 500}, "experiments": {"u": {}}}
    ct = _split(tmp_path / "ct_split.tsv", {"p0": "train", "p1": "train", "p3": "test"})
    mr = _split(tmp_path / "mr_split.tsv", {"p0": "train", "m1": "train", "p2": "test"})
    out = tmp_path / "nnUNet_raw"
    folder = export_experiment("u", manifest, None, out, settings, naming, labels, "CT", {"ct": ct})
    assert sorted(p.name for p in (folder / "labelsTr").iterdir())[0] == "p0_syn00.nii.gz"
    # p2's label maps (generate_from) are test patients of the image dataset mr: nothing is written.
    with pytest.raises(ValueError) as err:
        export_experiment("u", manifest, None, out, settings, naming, labels, "CT", {"ct": ct, "mr": mr})
    message = str(err.value)
    assert "experiments.u" in message and "p2_syn00" in message and "p2_syn01" in message
    assert "patient p2" in message and "test part of mr" in message and "case p0" not in message
    assert (folder / "labelsTr" / "p0_syn00.nii.gz").is_file()  # the previous export is left as it was


def test_generated_files_stored_as_shipped_are_linked_after_the_checks(tmp_path: Path, cases: list[ExportCase]) -> None:
    """Generate writes CT as int16 HU and label maps as uint8, what the dataset holds: they are checked, then
    hard-linked (no second compression, no second copy on disk); float CT is written as int16; a real scan
    is written (its labels go through its table)."""
    image = load_volume(cases[0].image)
    hu16 = save_volume(tmp_path / "hu16.nii.gz", np.rint(image.array).astype(np.int16), AFFINE)
    linked = ExportCase("p0_syn00", hu16, cases[0].label, "p0", background=-1000.0)
    folder = write_dataset(tmp_path / "Dataset500_Demo", [linked, *cases[1:]], TABLE, "CT", {})
    inode = lambda p: p.stat().st_ino  # noqa: E731
    assert inode(folder / "imagesTr/p0_syn00_0000.nii.gz") == inode(hu16)
    assert inode(folder / "labelsTr/p0_syn00.nii.gz") == inode(cases[0].label)
    assert inode(folder / "imagesTr/p0_syn01_0000.nii.gz") != inode(cases[1].image)  # float32: written as int16
    assert load_volume(folder / "imagesTr/p0_syn01_0000.nii.gz").array.dtype == np.int16
    assert inode(folder / "labelsTr/p0_real.nii.gz") != inode(cases[2].label)
    # Checked before linking: air under the labels refuses the linked case as it did the written one.
    label = load_volume(cases[0].label).array
    bad = np.rint(image.array).astype(np.int16)
    bad[label > 0] = -1000
    broken = ExportCase("p0_syn00", save_volume(tmp_path / "air16.nii.gz", bad, AFFINE), cases[0].label, "p0",
                        background=-1000.0)
    with pytest.raises(ValueError, match="air16.nii.gz: .* hold the background"):
        write_dataset(tmp_path / "Dataset501_Demo", [broken, *cases[1:]], TABLE, "CT", {})


def test_a_generated_file_deleted_after_generation_names_the_way_out(tmp_path: Path, cases: list[ExportCase]) -> None:
    """A file deleted inside generate's output folder: Snakemake reruns nothing, the export says what to do."""
    cases[0].image.unlink()
    with pytest.raises(FileNotFoundError, match=r"p0_syn0_img.nii.gz: missing from generate's output .* --forcerun generate"):
        write_dataset(tmp_path / "Dataset500_Demo", cases, TABLE, "CT", {})


def test_case_ids_that_sanitise_to_one_name_are_exported_under_names_of_their_own(tmp_path: Path,
                                                                                    cases: list[ExportCase]) -> None:
    """'P.01' and 'P_01' (two patients) both became P_01_syn00: the export stopped after generation and the
    audit. Now the id sanitising changed gets a digest of itself; the other, and every other id, keeps its name."""
    labels = [{"name": "background", "values": [0]}, {"name": "liver", "values": [1]}, {"name": "kidney", "values": [2]}]
    synthetic = [c for c in cases if c.provenance.get("synthetic") and c.identifier.endswith("_syn00")]
    rows = [{"case_id": case_id, "dataset": "ct", "source_case": case_id, "patient_id": case_id, "part": "train",
             "sample": 0, "seed": 0, "volume": str(c.image), "label": str(c.label), "background": -1000.0}
            for case_id, c in zip(["P.01", "P_01", "extra.s0001"], synthetic)]
    manifest = write_tsv(tmp_path / "manifest.tsv", rows, list(rows[0]))
    folder = export_experiment("u", manifest, None, tmp_path / "nnUNet_raw", {"splits": ["train"]},
                               {"export": {"first_id": 500}, "experiments": {"u": {}}}, labels, "CT", {})
    digest = hashlib.sha256(b"P.01").hexdigest()[:8]
    assert sorted(p.name for p in (folder / "labelsTr").iterdir()) == [
        f"P_01_{digest}_syn00.nii.gz", "P_01_syn00.nii.gz", "extra_s0001_syn00.nii.gz"]
    meta = json.loads((folder / "dataset.json").read_text())["medsynth"]["cases"]
    assert meta[f"P_01_{digest}_syn00"]["case_id"] == "P.01" and meta["P_01_syn00"]["case_id"] == "P_01"
    assert "licence" not in json.loads((folder / "dataset.json").read_text())  # none given: none claimed

    # Whoever gets the export alone learns the terms of the data behind it (nnU-Net's own "licence" field).
    folder = export_experiment("u", manifest, None, tmp_path / "nnUNet_raw", {"splits": ["train"]},
                               {"export": {"first_id": 500}, "experiments": {"u": {}}}, labels, "CT", {},
                               licences={"ct": "CC BY 4.0", "extra": None})
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["licence"] == ("ct: CC BY 4.0; extra: not stated in the config (datasets.extra.licence): ask the "
                               "data's owner before sharing")
    assert meta["medsynth"]["licences"]["ct"] == "CC BY 4.0"


def test_a_label_only_case_of_the_image_dataset_ships_only_its_synthetic_volumes(tmp_path: Path) -> None:
    """export.include_real with a cases table mixing CT cases and a label-only one (empty image): the real
    export took the label-only row with image '' (Snakemake stopped the whole run after the split: 'Empty file
    path encountered'); it has no real image to ship."""
    from medsynth.sharing.nnunet_export import real_cases

    img, lab = _case(tmp_path, "ct", 1, raw=True)
    rows = [{"case_id": "a", "image": str(img), "label": str(lab), "patient_id": "pa"},
            {"case_id": "b", "image": "", "label": str(lab), "patient_id": "pb"}]
    cases = real_cases(rows, {"a": "train", "b": "train"}, ["train"], TABLE)
    assert [c.identifier for c in cases] == ["a_real"]
