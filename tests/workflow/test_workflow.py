"""The whole workflow on a tiny phantom cohort, run as a user runs it (snakemake CLI)."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from medsynth.io.tables import read_tsv
from medsynth.io.checkpoint import load_checkpoint
from tiny_workflow import LABELS, TINY, no_controller_env, planned_rules

REPO = Path(__file__).resolve().parents[2]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


@pytest.mark.slow
def test_outputs_of_every_stage(finished):
    w = finished
    cases = read_tsv(w / "resources/raw/phantom/cases.tsv")
    assert len(cases) == 4
    split = {r["case_id"]: r["part"] for r in read_tsv(w / "results/split/phantom/split.tsv")}
    assert sorted(split) == sorted(c["case_id"] for c in cases)
    test_cases = [c for c, p in split.items() if p == "test"]
    assert test_cases

    for part in ("train", "val", "test"):
        pngs = sorted((w / "results/slices/phantom/oasis" / part / "images").glob("*.png"))
        assert pngs, part
        assert {p.name for p in pngs} == {p.name for p in (w / "results/slices/phantom/oasis" / part / "labels").glob("*.png")}
        assert all(split[p.name.rsplit("_z", 1)[0]] == part for p in pngs)  # patient-level: no leaks
        assert np.asarray(Image.open(pngs[0])).shape == (32, 32)

    train_dir = w / "results/train/tiny"
    metrics = read_tsv(train_dir / "metrics.tsv")
    assert [int(r["step"]) for r in metrics] == [6, 12]
    assert all(math.isfinite(float(r[k])) for r in metrics for k in ("ssim", "psnr", "rmse", "body_dice"))
    assert (train_dir / "checkpoints/latest.pt").is_file()
    assert list((train_dir / "samples").glob("*.png"))

    selected = json.loads((w / "results/select/tiny/selected.json").read_text())
    exported = load_checkpoint(w / "results/select/tiny/generator.pt")
    assert exported["data"]["slice"]["size"] == 32 and len(exported["data"]["labels"]) == 10
    assert selected["step"] in (6, 12) and selected["metric"] == "fid" and not selected["fallback_used"]

    manifest = [r for r in read_tsv(w / "results/generate/tiny/manifest.tsv") if r["dataset"] == "phantom"]
    made = [c for c, p in split.items() if p in ("train", "test")]  # generate.splits
    assert {r["case_id"] for r in manifest} == set(made)
    assert all(r["part"] == split[r["case_id"]] for r in manifest)
    assert sorted(int(r["sample"]) for r in manifest) == sorted(list(range(2)) * len(made))
    assert {(r["generator_step"], r["selected_by"].split("=")[0]) for r in manifest} == {(str(selected["step"]), "fid")}
    assert {r["noise"] for r in manifest} == {"volume:6mm"}  # one draw per volume, its noise map smoothed over 6 mm
    # Generated tissue under every labelled voxel: nothing left at the background value (-1000 HU).
    assert {(r["background"], r["tissue_at_background"]) for r in manifest} == {("-1000.0", "0.0")}
    for row in manifest:
        source = nib.load(w / "resources/raw/phantom" / row["case_id"] / "ct.nii.gz")
        generated = nib.load(w / row["volume"])
        np.testing.assert_allclose(generated.affine, source.affine, atol=1e-6)
        assert generated.shape == source.shape
        assert nib.load(w / row["label"]).shape == source.shape
        pngs = sorted(Path(w / row["pngs"]).glob("*.png"))
        assert pngs and np.asarray(Image.open(pngs[0])).shape == (32, 32)

    test_metrics = {r["metric"]: r for r in read_tsv(w / "results/evaluate/tiny/test_metrics.tsv")}
    assert set(test_metrics) == {"ssim", "psnr", "rmse", "ssim_body", "psnr_body", "rmse_body", "body_dice",
                                 "intensity_w1", "pixel_diversity", "fid", "kid", "lpips", "lpips_diversity",
                                 "seg_dice_generated", "seg_dice_real", "seg_ratio", "classes_outside_real_range",
                                 "memorisation_ratio", "memorisation_flagged", "memorisation_ratio_inception",
                                 "memorisation_flagged_inception", "through_plane_ratio", "through_plane_w1",
                                 "through_plane_ssim_ratio", "fid_coronal", "kid_coronal", "fid_sagittal",
                                 "kid_sagittal"}
    # Body Dice is the label map's body by construction on generated volumes (everything outside it is air):
    # NA with the reason; validation scores it on the generator's own output.
    assert test_metrics.pop("body_dice")["note"].startswith("not computed on the test set: generation sets")
    assert all(math.isfinite(float(r["mean"])) for r in test_metrics.values())
    # A test set smaller than kid_subset_size (20): KID is computed, and its std comes with a warning.
    assert int(test_metrics["kid"]["n"]) > 0 and "every subset holds all of it" in test_metrics["kid"]["note"]
    assert all(math.isfinite(float(r[k])) for r in metrics for k in ("fid", "kid"))  # FID during validation
    seg = read_tsv(w / "results/evaluate/tiny/segmentation.tsv")
    assert [r["class"] for r in seg][:2] == ["background", "body"] and seg[-1]["class"] == "mean (organs)"
    assert 0 <= float(test_metrics["seg_dice_real"]["mean"]) <= 1
    ratio = float(test_metrics["seg_dice_generated"]["mean"]) / float(test_metrics["seg_dice_real"]["mean"])
    assert float(test_metrics["seg_ratio"]["mean"]) == pytest.approx(ratio)
    assert float(test_metrics["pixel_diversity"]["mean"]) > 0  # two samples of one label map differ
    assert "Segmentation consistency" in (w / "reports/tiny/summary.md").read_text()
    # Per-class intensity in HU (CT), every sample of every test case against the real test slices.
    intensity = {r["class"]: r for r in read_tsv(w / "results/evaluate/tiny/class_intensity.tsv")}
    assert list(intensity) == [c["name"] for c in LABELS] and {r["unit"] for r in intensity.values()} == {"HU"}
    assert all(int(r["voxels_generated"]) == 2 * int(r["voxels_real"]) for r in intensity.values())
    assert float(intensity["background"]["mean_real"]) == pytest.approx(-1000.0)  # air outside the body
    assert 0 < float(intensity["liver"]["mean_real"]) < 120  # the phantom's liver: 60 HU, per-patient offsets
    flags = [c for c, r in intensity.items() if r["outside_real_range"] == "True"]
    assert int(test_metrics["classes_outside_real_range"]["mean"]) == len(flags)
    assert test_metrics["classes_outside_real_range"]["note"] == ", ".join(flags)
    assert "Per-class intensity (generated vs real)" in (w / "reports/tiny/summary.md").read_text()
    stats = np.load(w / "results/metrics/phantom/inception_test.npz")
    assert bool(stats["available"]) and stats["features"].shape[1] == 2048

    # Memorisation audit: every generated test slice against the training slices, closest first.
    audit = read_tsv(w / "results/evaluate/tiny/memorisation.tsv")
    test_slices = sum(len(np.load(w / "results/slices/phantom/cases" / c / "slices.npz")["z"]) for c in test_cases)
    assert len(audit) == 2 * test_slices
    # In pixels and (the weights are there) in Inception features, sorted by the closer of the two.
    closest = [min(float(r["ratio"]), float(r["feature_ratio"])) for r in audit]
    assert closest == sorted(closest)
    assert all(split[r["nearest_case"]] == split[r["feature_nearest_case"]] == "train" for r in audit)
    for suffix, column in (("", "ratio"), ("_inception", "feature_ratio")):
        below = sum(float(r[column]) < 0.5 for r in audit)
        assert int(test_metrics[f"memorisation_flagged{suffix}"]["mean"]) == below
    assert sum(r["flagged"] == "True" for r in audit) == sum(min(float(r["ratio"]), float(r["feature_ratio"])) < 0.5
                                                             for r in audit)
    # Utility curve: k = 1 and 2 (all) of the 2 training patients; (b) adds the synthetic slices of every other
    # patient's label maps (the training label maps' and labels_only's), (c) trains on all of them.
    utility = read_tsv(w / "results/utility/tiny/utility.tsv")
    points = [(r["arm"], int(r["real_patients"])) for r in utility]
    assert points == [p for p in [("real", 1), ("real", 2), ("real+synthetic", 1), ("real+synthetic", 2),
                                  ("synthetic", 0)] for _ in range(len(LABELS) + 1)]
    slices = {(f.parents[2].name, f.parent.name): len(np.load(f)["z"]) for f in w.glob("results/slices/*/cases/*/slices.npz")}
    manifest = {r["case_id"]: r for r in read_tsv(w / "results/generate/tiny/manifest.tsv")
                if r["part"] in ("train", "generate_from")}
    synthetic = [(r["patient_id"], 2 * slices[(r["dataset"], r["source_case"])]) for r in manifest.values()]
    draws = read_tsv(w / "results/utility/tiny/draws.tsv")
    train_patients = sorted(c for c, p in split.items() if p == "train")  # phantom: one case per patient
    for d in draws:
        chosen = d["patients"].split()
        real_slices = sum(slices[("phantom", c)] for c in chosen)
        other = sum(n for patient, n in synthetic if patient not in chosen)
        expected = {"real": (real_slices, 0), "real+synthetic": (real_slices, other),
                    "synthetic": (0, sum(n for _, n in synthetic))}[d["arm"]]
        assert set(chosen) <= set(train_patients) and len(chosen) == int(d["real_patients"]), d
        assert (d["organ_dice"] == "NA") == (d["arm"] == "real+synthetic" and other == 0), d
        assert (int(d["real_slices"]), int(d["synthetic_slices"])) == expected, d
    for r in utility:
        if r["dice"] != "NA":
            assert float(r["ci_low"]) - 1e-9 <= float(r["dice"]) <= float(r["ci_high"]) + 1e-9 <= 1 + 1e-9
    dice = {(r["arm"], r["real_patients"], r["class"]): r["dice"] for r in utility}
    for r in utility:  # (b) - (a) of the same patients, from the same table's numbers (one draw per k)
        a = dice[("real", r["real_patients"], r["class"])] if r["arm"] == "real+synthetic" else "NA"
        if "NA" in (r["dice"], a):
            assert r["delta"] == "NA", r
            continue
        assert float(r["delta"]) == pytest.approx(float(r["dice"]) - float(a))
    # The image-only MR has no labels to train or score segmenters on: no utility benchmark, and the summary
    # says why.
    assert not (w / "results/utility/tiny-unpaired").exists()
    assert "not run: the image dataset phantom_mr has no label maps" in (w / "reports/tiny-unpaired/summary.md"
                                                                          ).read_text()
    assert "Utility curve" in (w / "reports/tiny/summary.md").read_text()
    card = (w / "results/select/tiny/MODEL_CARD.md").read_text()
    assert "## Does the synthetic data help?" in card and "- With 1 real training patient, adding synthetic images of other" in card
    assert "not run: the image dataset phantom_mr has no label maps" in (w / "results/select/tiny-unpaired/"
                                                                          "MODEL_CARD.md").read_text()
    for name in ("metric_curves.png", "loss_curves.png", "samples.png", "case_strip.png", "class_intensity.png",
                 "memorisation.png", "utility_curve.png"):
        with Image.open(w / "reports/tiny" / name) as img:
            img.load()
            assert img.size[0] > 100 and img.size[1] > 100
    with Image.open(w / "reports/tiny/side_views.png") as img:  # 10 slices of 8 mm under 384 mm: a flat strip
        img.load()
        assert img.size[0] > 600 and img.size[1] > 60
    summary = (w / "reports/tiny/summary.md").read_text()
    assert f"step **{selected['step']}**" in summary and "ssim" in summary
    assert (w / "reports/tiny/summary.html").read_text().startswith("<!doctype html>")
    for log in ("logs/train/tiny.log", "logs/generate/tiny.log"):
        assert (w / log).stat().st_size > 0
    assert (w / "benchmarks/train/tiny.tsv").is_file()


@pytest.mark.slow
def test_a_test_maps_copy_in_a_generate_from_dataset_is_left_out_with_a_warning(finished):
    """tiny_workflow.test_map_copy: the phantom test case's label map saved again as labels_only's P7/s1 (the
    load-time check knows patients by id only). Generation leaves it out, so neither the export nor the
    utility curve sees it, and the export (which would refuse it) ships the rest."""
    w = finished
    log = (w / "logs/generate/tiny.log").read_text()
    left_out = next(line for line in log.splitlines() if "left out" in line)
    assert "generate_from case labels_only.P7_s1 left out: its label map" in left_out
    assert f"{w}/label_maps/P7/s1/label.nii.gz is a test case's (resources/raw/phantom/phantom_" in left_out
    manifest = read_tsv(w / "results/generate/tiny/manifest.tsv")
    assert manifest and not [r for r in manifest if "P7" in r["case_id"]]
    assert (w / "results/preprocess/labels_only/P7_s1/label.nii.gz").is_file()  # preprocessed like any case
    exported = json.loads((w / "results/export/tiny/nnUNet_raw/Dataset500_Tiny/dataset.json").read_text())
    assert exported["medsynth"]["cases"] and not [c for c in exported["medsynth"]["cases"] if "P7" in c]
    # Where it is shared, counted and named nowhere: its id and files are a test patient's.
    dataset_json = (w / "results/export/tiny/nnUNet_raw/Dataset500_Tiny/dataset.json").read_text()
    assert exported["medsynth"]["left_out_by_generation"]["cases"] == 1
    card = (w / "results/share/tiny/MODEL_CARD.md").read_text()
    assert "label maps left out of generation (a test patient's study): 1 (generate_from label maps" in card
    tested = [r["case_id"] for r in read_tsv(w / "results/split/phantom/split.tsv") if r["part"] == "test"]
    for shared in (dataset_json, card):
        assert tested and not [name for name in ["P7", *tested] if name in shared]
    assert "left out of generation" not in (w / "results/share/tiny-unpaired/MODEL_CARD.md").read_text()


@pytest.mark.slow
def test_label_only_cases_get_synthetic_volumes_on_their_own_grid(finished):
    """Label maps shaped like a real cohort's (tiny_workflow.label_only_cohort: two studies of one patient,
    one stored LPS, wider than the crop, a top slice with a 3 x 3 patch of label): each gets volumes on its
    own grid, generated tissue under every labelled voxel, its studies under one patient."""
    w = finished
    manifest = [r for r in read_tsv(w / "results/generate/tiny/manifest.tsv") if r["dataset"] == "labels_only"]
    assert sorted({r["case_id"] for r in manifest}) == ["labels_only.P9_s1", "labels_only.P9_s2"]
    assert {r["part"] for r in manifest} == {"generate_from"} and len(manifest) == 4  # 2 cases x 2 samples
    assert {r["patient_id"] for r in manifest} == {"P9"}
    meta = json.loads((w / "results/preprocess/labels_only/P9_s1/meta.json").read_text())
    assert meta["label_only"] and meta["mask_source"] == "labels"
    for row in manifest:
        source = nib.load(w / "label_maps" / "P9" / row["source_case"][3:] / "label.nii.gz")
        volume = nib.load(w / row["volume"])
        np.testing.assert_allclose(volume.affine, source.affine, atol=1e-6)  # its own grid, not a training case's
        hu = np.asarray(volume.dataobj)
        labelled = np.asarray(source.dataobj) > 0
        # HU through the generator's CT window (the 12-step generator paints values around 0 HU)
        assert volume.get_data_dtype() == np.int16 and -1000 <= hu.min() and hu.max() <= 1000
        assert hu[labelled].std() > 1  # a painted image, not the placeholder's constant
        # Tissue under every label, the flanks beyond the crop and the 3 x 3 patch included; air elsewhere.
        background = float(row["background"])
        assert hu[labelled].min() > background and float(row["tissue_at_background"]) == 0, row
        assert (hu[~labelled] == background).mean() > 0.5
        np.testing.assert_array_equal(np.asarray(nib.load(w / row["label"]).dataobj), np.asarray(source.dataobj))
    exported = json.loads((w / "results/export/tiny/nnUNet_raw/Dataset500_Tiny/dataset.json").read_text())
    assert {"labels_only_P9_s1_syn00", "labels_only_P9_s2_syn01"} <= set(exported["medsynth"]["cases"])


@pytest.mark.slow
def test_unpaired_experiment_runs_end_to_end(finished):
    w = finished
    mr_cases = read_tsv(w / "resources/raw/phantom_mr/cases.tsv")
    # Image-only: no label maps in its table; its preprocessed label map is its body mask.
    assert all(r["image"].endswith("mr.nii.gz") and r["modality"] == "MR" and not r["label"] for r in mr_cases)
    pre = w / "results/preprocess/phantom_mr" / mr_cases[0]["case_id"]
    assert json.loads((pre / "meta.json").read_text())["image_only"]
    np.testing.assert_array_equal(np.asarray(nib.load(pre / "label.nii.gz").dataobj),
                                  np.asarray(nib.load(pre / "mask.nii.gz").dataobj))
    assert not (w / "results/segmenter/phantom_mr").exists()
    losses = read_tsv(w / "results/train/tiny-unpaired/losses.tsv")
    assert len(losses) == 8 and "loss_du" in losses[0]
    metrics = read_tsv(w / "results/train/tiny-unpaired/metrics.tsv")
    assert all(r["ssim"] == "NA" and math.isfinite(float(r["intensity_w1"])) for r in metrics)
    selected = json.loads((w / "results/select/tiny-unpaired/selected.json").read_text())
    assert selected["metric"] == "intensity_w1"
    test = {r["metric"]: r for r in read_tsv(w / "results/evaluate/tiny-unpaired/test_metrics.tsv")}
    assert test["ssim"]["mean"] == "NA" and math.isfinite(float(test["intensity_w1"]["mean"]))
    assert (w / "reports/tiny-unpaired/samples.png").stat().st_size > 0
    # What needs the image dataset's labels is NA with the reason; the rest is computed.
    reason = "not computed: the image dataset phantom_mr has no label maps"
    for metric in ("seg_dice_generated", "seg_dice_real", "seg_ratio", "classes_outside_real_range"):
        assert test[metric]["mean"] == "NA" and reason in test[metric]["note"], metric
    for metric in ("intensity_w1", "pixel_diversity", "fid", "kid", "through_plane_ratio", "memorisation_ratio"):
        assert math.isfinite(float(test[metric]["mean"])), metric
    intensity = read_tsv(w / "results/evaluate/tiny-unpaired/class_intensity.tsv")
    assert all(r["mean_real"] == "NA" and r["outside_real_range"] != "True" for r in intensity)
    assert (w / "reports/tiny-unpaired/class_intensity.png").stat().st_size > 0
    assert (w / "reports/tiny-unpaired/summary.html").is_file() and (w / "results/share/tiny-unpaired").is_dir()
    # The sample grid's third column is the CT the label map was drawn on, not a real MR: said so, as the figure does.
    summary = (w / "reports/tiny-unpaired/summary.md").read_text()
    assert "Test samples (label | samples | label source image)" in summary and "| samples | real)" not in summary
    assert all(r["ssim"] == "NA" and "unpaired" in r["note"]
               for r in read_tsv(w / "results/evaluate/tiny-unpaired/per_case.tsv"))


@pytest.mark.slow
def test_export_is_a_dataset_nnunet_accepts(finished):
    """Real + synthetic training cases, checked by nnU-Net's own verify_dataset_integrity."""
    verify = pytest.importorskip("nnunetv2.experiment_planning.verify_dataset_integrity").verify_dataset_integrity
    w = finished
    split = read_tsv(w / "results/split/phantom/split.tsv")
    train = sorted(r["case_id"] for r in split if r["part"] == "train")
    for exp, folder, channel in (("tiny", "Dataset500_Tiny", "CT"), ("tiny-unpaired", "Dataset501_TinyUnpaired", "MR")):
        root = w / "results/export" / exp / "nnUNet_raw"
        assert [p.name for p in root.iterdir() if not p.name.startswith(".")] == [folder]  # + Snakemake's stamp
        verify(str(root / folder), num_processes=1)
        meta = json.loads((root / folder / "dataset.json").read_text())
        assert meta["channel_names"] == {"0": channel} and meta["labels"] == {c["name"]: i for i, c in enumerate(LABELS)}
        synthetic = sorted(i for i, c in meta["medsynth"]["cases"].items() if c["synthetic"] and c["part"] == "train")
        assert synthetic == sorted(f"{c}_syn{k:02d}" for c in train for k in range(2))  # no test case leaks in
        assert {c["part"] for c in meta["medsynth"]["cases"].values() if c["synthetic"]} == (
            {"train", "generate_from"} if exp == "tiny" else {"train"})
        assert all(c["generator_step"] for c in meta["medsynth"]["cases"].values() if c["synthetic"])
        # Real cases: the paired experiment's CT; the image-only MR has no label maps to ship them with.
        real_train = [] if exp != "tiny" else train
        assert sorted(i for i, c in meta["medsynth"]["cases"].items() if not c["synthetic"]) == \
            [f"{c}_real" for c in real_train]
        assert ("include_real_note" in meta["medsynth"]) == (exp != "tiny")
        # Every shipped synthetic volume was audited for memorisation; the table ships with them.
        audit = read_tsv(root / folder / "memorisation_audit.tsv")
        audited = {(r["case_id"], int(r["sample"])) for r in audit}
        shipped = {(c["case_id"], int(c["sample"])) for c in meta["medsynth"]["cases"].values() if c["synthetic"]}
        flagged = {(r["case_id"], int(r["sample"])) for r in audit if r["flagged"] == "True"}
        assert shipped == audited - flagged and meta["medsynth"]["memorisation_audit"]["audited"] == len(audit)
        assert all(r["own_ratio_median"] != "NA" for r in audit if exp == "tiny" and "." not in r["case_id"])
        # How much of each volume the audit's crops saw: a share, carried into dataset.json per case.
        shares = {(r["case_id"], int(r["sample"])): r["audited_share"] for r in audit}
        assert all(0 < float(v) <= 1 for v in shares.values())
        assert all(c["memorisation"]["audited_share"] == shares[(c["case_id"], int(c["sample"]))]
                   for c in meta["medsynth"]["cases"].values() if c["synthetic"])
        folds = json.loads((root / folder / "splits_final.json").read_text())
        patient = {i: c["patient"] for i, c in meta["medsynth"]["cases"].items()}
        for f in folds:  # a patient's synthetic variants and real scan never straddle a fold
            assert {patient[i] for i in f["val"]}.isdisjoint({patient[i] for i in f["train"]})
        if exp == "tiny":  # synthetic CT on the source grid and affine of the source case, in HU
            case = train[0]
            img = nib.load(root / folder / "imagesTr" / f"{case}_syn00_0000.nii.gz")
            src = nib.load(w / "resources/raw/phantom" / case / "ct.nii.gz")
            np.testing.assert_allclose(img.affine, src.affine, atol=1e-6)
            assert img.get_data_dtype() == np.int16 and img.shape == src.shape


@pytest.mark.slow
def test_every_generator_has_its_model_card(finished):
    """select writes the card into generator.pt; model_card adds the test metrics and shares both."""
    from medsynth.sharing.model_card import PENDING, SECTIONS, missing_fields

    for exp, datasets in (("tiny", ["phantom"]), ("tiny-unpaired", ["phantom", "phantom_mr"])):
        selected = load_checkpoint(finished / f"results/select/{exp}/generator.pt")["card"]
        assert selected["test_metrics"] == PENDING and missing_fields(selected) == ["test_metrics", "licence"]
        shared = load_checkpoint(finished / f"results/share/{exp}/generator.pt")
        card = shared["card"]
        assert missing_fields(card) == [] and set(SECTIONS) <= set(card)
        split = read_tsv(finished / "results/split/phantom/split.tsv")
        data = card["training_data"]
        assert [d["name"] for d in data["datasets"]] == datasets
        assert data["datasets"][0]["patients"]["train"] == sum(r["part"] == "train" for r in split)
        slices = sum(np.load(finished / f"results/slices/phantom/cases/{r['case_id']}/slices.npz")["z"].size
                     for r in split if r["part"] == "train")
        assert data["datasets"][0]["train_slices"] == slices > 0
        # The phantom's cases table names no patients: the split log and the card say its patients are cases.
        assert data["datasets"][0]["patient_ids"] is False
        assert "no patient ids" in (finished / "logs/split/phantom.log").read_text()
        # The phantoms' bodies fit the 32-px crop (12 mm spacing): counted, none cut.
        assert data["datasets"][0]["body_outside_crop"] == {"cases": 0, "share": 0.0, "of": sum(
            r["part"] == "train" for r in split)}
        assert data["spacing"] == {"in_plane_mm": [12.0, 12.0], "slice_mm": [8.0, 8.0]}
        # Each dataset's grid, by the model_card rule (selection's card has the image dataset's only).
        assert [d.get("spacing") for d in data["datasets"]] == [data["spacing"]] * len(datasets)
        assert "spacing" not in selected["training_data"]["datasets"][0]
        assert [e["name"] for e in data["labels"]] == [e["name"] for e in LABELS]
        assert card["licence"][datasets[0]].startswith("not stated in the config (datasets.phantom.licence)")
        train = card["training"]
        assert train["steps"] == TINY["experiments"][exp]["train"]["steps"] and train["hardware"][0].startswith("CPU")
        assert 0 < train["wall_time_s"] < 3600 and train["jobs"] == 1
        chosen = json.loads((finished / f"results/select/{exp}/selected.json").read_text())
        assert card["selection"]["step"] == chosen["step"] == shared["step"]
        metrics = {r["metric"]: r for r in read_tsv(finished / f"results/evaluate/{exp}/test_metrics.tsv")}
        assert set(card["test_metrics"]) == set(metrics)
        assert card["test_metrics"]["kid"]["mean"] == pytest.approx(float(metrics["kid"]["mean"]))
        text = (finished / f"results/select/{exp}/MODEL_CARD.md").read_text()
        assert text == (finished / f"results/share/{exp}/MODEL_CARD.md").read_text()
        for needle in ("## Intended use", "not for", "diagnosis", "## Licence of the training data", "| kid |",
                       f"step: {chosen['step']}", "3: liver ← 3", "## Memorisation audit of the shared synthetic cases",
                       "volumes audited:"):
            assert needle.lower() in text.lower(), needle
    assert "intensity mapping: ct_window -1000, 1000" in (finished / "results/select/tiny/MODEL_CARD.md").read_text()
    assert "- spacing (phantom): 12.0 x 12.0 mm in-plane, slices 8.0 mm" in (
        finished / "results/share/tiny-unpaired/MODEL_CARD.md").read_text()


@pytest.mark.slow
def test_second_run_is_a_no_op(finished, snakemake):
    result = snakemake(finished, TINY, "-n")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Nothing to be done" in result.stdout + result.stderr
    # A set-like list in another order is the same config (it reran generation and all after it).
    reordered = json.loads(json.dumps(TINY))
    reordered["generate"]["splits"] = list(reversed(TINY["generate"]["splits"]))
    result = snakemake(finished, reordered, "-n")
    assert "Nothing to be done" in result.stdout + result.stderr, result.stdout[-2000:]


@pytest.mark.slow
def test_a_plot_setting_reruns_only_report_rules(finished, snakemake):
    changed = json.loads(json.dumps(TINY))
    changed["report"]["dpi"] = 60
    result = snakemake(finished, changed, "-n")
    assert result.returncode == 0, result.stderr[-2000:]
    assert planned_rules(result) == {"report_curves", "report_samples", "report_intensity", "report_memorisation",
                                     "report_utility", "report_summary", "all"}
    changed = json.loads(json.dumps(TINY))
    changed["datasets"]["phantom"]["licence"] = "CC BY 4.0"  # the card's and dataset.json's text, not the generator
    assert planned_rules(snakemake(finished, changed, "-n")) == {"model_card", "export", "all"}
    changed = json.loads(json.dumps(TINY))
    changed["generate"]["samples"] = 3
    assert planned_rules(snakemake(finished, changed, "-n")) == {
        "generate", "evaluate", "model_card", "audit_shared", "export", "utility", "report_samples",
        "report_intensity", "report_memorisation", "report_utility", "report_summary", "all"}


@pytest.mark.slow
def test_an_experiment_fine_tunes_another_experiments_generator(finished, snakemake):
    """train.init_from: results/select/tiny/generator.pt is an input; the new run starts from it."""
    from medsynth.io.checkpoint import load_checkpoint
    from medsynth.train.init_from import file_digest

    config = json.loads(json.dumps(TINY))
    source = "results/select/tiny/generator.pt"
    config["experiments"]["tuned"] = {"dataset": "phantom", "train": {
        **TINY["experiments"]["tiny"]["train"], "steps": 6, "init_from": source}}
    target = "results/select/tuned/generator.pt"
    plan = snakemake(finished, config, "-n", target)
    assert plan.returncode == 0, plan.stderr[-2000:]
    assert planned_rules(plan) == {"train", "select"}  # tiny's own training stays as it is
    result = snakemake(finished, config, target)
    assert result.returncode == 0, result.stderr[-4000:]
    log = (finished / "logs/train/tuned.log").read_text()
    assert f"init_from {source}" in log and "new classes [] start fresh" in log
    assert "holds no discriminator D; it starts fresh" in log
    latest = load_checkpoint(finished / "results/train/tuned/checkpoints/latest.pt")
    assert latest["init_from"] == {"path": source, "digest": file_digest(finished / source)}
    assert latest["step"] == 6
    # Its model card carries the source generator's data (their licences come with rule model_card).
    init = load_checkpoint(finished / target)["card"]["training"]["init_from"]
    assert init["experiment"] == "tiny" and [d["name"] for d in init["datasets"]] == ["phantom"]
    # Spelt as an absolute path, a source of this config is the same source: the splits it trained by are the
    # training's input (its patients are checked against this run's held-out ones before it starts).
    absolute = json.loads(json.dumps(config))
    absolute["experiments"]["tuned"]["train"]["init_from"] = str(finished / "results/select/tiny-unpaired/generator.pt")
    plan = snakemake(finished, absolute, "-n", target)
    assert plan.returncode == 0, plan.stderr[-2000:]
    train_job = re.search(r"^rule train:\n(.*?)\n\n", plan.stdout, re.S | re.M).group(1)
    assert "results/split/phantom_mr/split.tsv" in re.search(r"input: (.*)", train_job).group(1)
    # Up a chain: tuned2 starts from tuned, which started from tiny-unpaired, so the MR dataset's split is
    # checked for tuned2 too (the weights learnt from its training patients two steps back).
    absolute["experiments"]["tuned2"] = {"dataset": "phantom", "train": {
        **TINY["experiments"]["tiny"]["train"], "steps": 6, "init_from": target}}
    plan = snakemake(finished, absolute, "-n", "results/select/tuned2/generator.pt")
    assert plan.returncode == 0, plan.stderr[-2000:]
    (train_job,) = [job for job in re.findall(r"^rule train:\n(.*?)\n\n", plan.stdout, re.S | re.M)
                    if "experiment=tuned2" in job]
    assert "results/split/phantom_mr/split.tsv" in re.search(r"input: (.*)", train_job).group(1)


def test_config_errors_name_the_key(tmp_path, snakemake):
    bad = json.loads(json.dumps(TINY))
    bad["slice"]["sise"] = 64
    result = snakemake(tmp_path, bad, "-n")
    assert result.returncode != 0
    assert "'sise' was unexpected" in result.stdout + result.stderr
    bad = json.loads(json.dumps(TINY))
    bad["experiments"]["tiny"]["dataset"] = "nope"
    result = snakemake(tmp_path, bad, "-n")
    assert result.returncode != 0 and "experiments.tiny.dataset" in result.stdout + result.stderr


def test_slices_without_pngs_write_no_picture_and_no_folder_view(tmp_path, snakemake):
    """slice.pngs: none (a cohort's file count): slices.npz as always, an empty png folder, no OASIS view;
    asked for, the view names the setting instead of linking nothing."""
    cfg = {"datasets": {"phantom": TINY["datasets"]["phantom"]}, "slice": {"size": 32, "pngs": "none"},
           "split": TINY["split"]}
    result = snakemake(tmp_path, cfg)
    assert result.returncode == 0, result.stderr[-3000:]
    cases = sorted((tmp_path / "results/slices/phantom/cases").iterdir())
    assert len(cases) == 4
    for case in cases:
        with np.load(case / "slices.npz") as f:
            assert len(f["z"]) > 0
        assert (case / "png").is_dir() and not list((case / "png").rglob("*.png"))
    assert not (tmp_path / "results/slices/phantom/oasis").exists()
    view = snakemake(tmp_path, cfg, "results/slices/phantom/oasis")
    assert view.returncode != 0
    log = (tmp_path / "logs/split/phantom_oasis_view.log").read_text()
    assert "slice.pngs: none" in log and "--forcerun slice" in log


def test_the_workflow_is_lint_clean():
    """Snakemake's linter on the default config (its checks are text patterns: a docstring in common.smk
    reading "rule all when ...: " made it see rules mixed with functions)."""
    result = subprocess.run([sys.executable, "-m", "snakemake", "--lint"], cwd=REPO, capture_output=True,
                            text=True, timeout=300, env=no_controller_env())
    assert "Congratulations, your workflow is in a good condition!" in result.stdout + result.stderr, (
        result.stdout[-3000:] + result.stderr[-3000:])


def test_default_config_is_valid_and_plans_every_stage(tmp_path):
    """In a folder of its own: in the checkout, a demo run (finished or stopped midway) decides the plan."""
    shutil.copytree(REPO / "config", tmp_path / "config")  # the label tables' paths are relative to the run
    result = subprocess.run([*SNAKEMAKE, "--snakefile", str(REPO / "workflow" / "Snakefile"), "-n", "--cores", "1"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300, env=no_controller_env())
    assert result.returncode == 0, result.stderr[-2000:]
    assert {"download", "train", "select", "generate", "evaluate", "export"} <= planned_rules(result)


def _smk_constants() -> dict:
    """STAGE_MB_AT_256 and IMPORTS_MB as common.smk states them (the bench's measurements)."""
    import ast

    text = (Path(__file__).resolve().parents[2] / "workflow/rules/common.smk").read_text()
    stages = ast.literal_eval(re.search(r"^STAGE_MB_AT_256 = (\{.*?\})$", text, re.M | re.S).group(1))
    return {"stages": stages, "imports": int(re.search(r"^IMPORTS_MB = (\d+)$", text, re.M).group(1))}


def test_heavy_jobs_ask_for_their_measured_memory_plus_the_training_slices_they_hold(finished, snakemake):
    """mem_mb = twice the measured working memory at this slice size + the training slices held, counted
    from the finished run's files (2 bytes a pixel for evaluate's images, 4 for the segmenter's)."""
    from medsynth.io.npz import slices_in

    result = snakemake(finished, TINY, "-n", "--forcerun", "segmenter", "evaluate")
    assert result.returncode == 0, result.stderr[-3000:]
    constants, size = _smk_constants(), TINY["slice"]["size"]
    r = size / 256
    seen = set()
    for rule, body in re.findall(r"^rule (segmenter|evaluate):\n((?:    .*\n)+)", result.stdout, re.M):
        wildcards = dict(w.split("=") for w in re.search(r"wildcards: (.*)", body).group(1).split(", "))
        mem = int(re.search(r"mem_mb=(\d+)", body).group(1))
        if rule == "segmenter":
            dataset, per_pixel = wildcards["dataset"], 4
        else:
            exp = TINY["experiments"][wildcards["experiment"]]
            dataset, per_pixel = exp.get("images_from", exp["dataset"]), 2
        split = read_tsv(finished / f"results/split/{dataset}/split.tsv")
        files = [finished / f"results/slices/{dataset}/cases/{row['case_id']}/slices.npz" for row in split
                 if row["part"] == "train"]
        working = 2 * (constants["imports"] + constants["stages"][rule] * max(r, r * r))
        assert mem == int(working + slices_in(files) * size * size * per_pixel / 1e6), (rule, wildcards)
        seen.add(rule)
    assert seen == {"segmenter", "evaluate"}
