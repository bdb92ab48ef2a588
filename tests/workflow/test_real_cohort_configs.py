"""The shipped configs for real cohorts plan on folders shaped like the releases they name."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from medsynth.data.phantom import make_case
from medsynth.io.nifti import save_volume
from medsynth.io.tables import read_tsv
from tiny_workflow import planned_jobs

REPO = Path(__file__).resolve().parents[2]
# Phantom classes -> TotalSegmentator v2 'total' values: muscle (autochthon), liver, spleen, kidney, lung,
# bone (a vertebra), aorta, bowel (colon); the phantom's body class has no TotalSegmentator value.
TOTALSEG = {2: 86, 3: 5, 4: 1, 5: 2, 6: 10, 7: 30, 8: 52, 9: 20}
# AutoPET's layout: <patient>/<study>/CTres.nii.gz, several studies of some patients.
STUDIES = {"PETCT_0a1b": ["03-2002"], "PETCT_1c2d": ["07-2003", "11-2004"], "PETCT_2e3f": ["01-2001"],
           "PETCT_3a4b": ["05-2005", "06-2006"], "PETCT_4c5d": ["09-2000"], "PETCT_5e6f": ["02-2002"]}


def totalseg_labels(label: np.ndarray) -> np.ndarray:
    """A phantom label map in TotalSegmentator's values, with a bony pelvis (sacrum 25, hips 77/78) on its
    lowest slices: a whole-body map of which only the lower part is pelvis."""
    out = np.zeros(label.shape, np.uint8)
    for phantom, ts in TOTALSEG.items():
        out[label == phantom] = ts
    bone = label == 7
    out[..., :3][bone[..., :3]] = 25
    x = label.shape[0] // 2
    out[:x, :, :3][(label[:x, :, :3] == 2)] = 77
    out[x:, :, :3][(label[x:, :, :3] == 2)] = 78
    return out


def autopet_like(root: Path) -> tuple[Path, Path]:
    """FDG-PET-CT-Lesions/<patient>/<study>/CTres.nii.gz and TotalSegmentator maps <patient>_<study>.nii.gz."""
    images, labels = root / "FDG-PET-CT-Lesions", root / "totalsegmentator"
    for i, (patient, studies) in enumerate(sorted(STUDIES.items())):
        for j, study in enumerate(studies):
            case = make_case(10 * i + j, seed=3, shape=(48, 48, 8), spacing=(8.0, 8.0, 8.0))  # RAS and LPS
            save_volume(images / patient / study / "CTres.nii.gz", case.ct, case.affine)
            save_volume(labels / f"{patient}_{study}.nii.gz", totalseg_labels(case.label), case.affine)
    return images, labels


def synthrad_like(root: Path, n: int) -> Path:
    """Task1.zip holding Task1/pelvis/<id>/{mr,ct,mask}.nii.gz (and a brain case that must not be read)."""
    archive = root / "Task1.zip"
    root.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive, "w") as zf:
        for i in range(n):
            case = make_case(i, seed=4, shape=(48, 48, 4), spacing=(8.0, 8.0, 8.0))
            folder = root / "unzipped" / f"1PA{i:03d}"
            files = {"mr": case.mr, "ct": case.ct, "mask": (case.label > 0).astype(np.uint8)}
            for name, data in files.items():
                save_volume(folder / f"{name}.nii.gz", data, case.affine)
                zf.write(folder / f"{name}.nii.gz", f"Task1/pelvis/1PA{i:03d}/{name}.nii.gz")
        zf.write(folder / "mr.nii.gz", "Task1/brain/1BA000/mr.nii.gz")
    return archive


@pytest.mark.slow
def test_autopet_to_synthrad_plans_every_stage_on_release_shaped_folders(tmp_path, snakemake):
    images, labels = autopet_like(tmp_path / "autopet")
    archive = synthrad_like(tmp_path / "synthrad", 5)
    config = yaml.safe_load((REPO / "config/autopet_synthrad.yaml").read_text())
    ds = config["datasets"]
    ds["autopet"]["local"]["root"] = str(images)
    ds["autopet"]["layout"]["label_root"] = str(labels)
    ds["synthrad_mr"]["url"].update(href=archive.resolve().as_uri(), size=archive.stat().st_size)
    work = tmp_path / "work"
    shutil.copytree(REPO / "config", work / "config")  # the label table's path is relative to the run folder
    # The data stages up to the split (both downloads, both splits) run; then the whole plan.
    first = snakemake(work, config, *(f"results/split/{d}/split.tsv" for d in ("autopet", "synthrad_mr")))
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    cases = {d: read_tsv(work / f"resources/raw/{d}/cases.tsv") for d in ("autopet", "synthrad_mr")}
    assert len(cases["autopet"]) == 8 and {r["patient_id"] for r in cases["autopet"]} == set(STUDIES)
    assert len(cases["synthrad_mr"]) == 5 and not any(r["label"] for r in cases["synthrad_mr"])  # image-only
    assert all(r["mask"].endswith("mask.nii.gz") for r in cases["synthrad_mr"])
    split = read_tsv(work / "results/split/autopet/split.tsv")
    parts = {}
    for row in split:
        parts.setdefault(row["patient_id"], set()).add(row["part"])
    assert all(len(p) == 1 for p in parts.values())  # every study of a patient in one part
    plan = snakemake(work, config, "-n")
    assert plan.returncode == 0, plan.stdout[-3000:] + plan.stderr[-3000:]
    jobs = planned_jobs(plan)
    assert jobs["preprocess"] == 13 and jobs["slice"] == 13  # 8 AutoPET studies + 5 SynthRAD pelvis MR
    for rule in ("train", "select", "generate", "evaluate", "audit_shared", "export", "model_card", "report_summary"):
        assert jobs[rule] == 1, rule
    # The image-only MR has no labels to train a segmenter on or score one against: no segmentation
    # consistency (NA in the test metrics) and no utility benchmark.
    assert "segmenter" not in jobs and "utility" not in jobs
    assert "Task1/brain" not in (work / "resources/raw/synthrad_mr/cases.tsv").read_text()


@pytest.mark.slow
def test_autopet_plans_the_synthetic_training_set_and_the_utility_curve(tmp_path, snakemake):
    """config/autopet.yaml on AutoPET-shaped folders (studies of one patient, RAS and LPS): what the cohort
    is for, synthetic CT of the training label maps exported for nnU-Net, and whether it helps."""
    images, labels = autopet_like(tmp_path / "autopet")
    config = yaml.safe_load((REPO / "config/autopet.yaml").read_text())
    config["datasets"]["autopet"]["local"]["root"] = str(images)
    config["datasets"]["autopet"]["layout"]["label_root"] = str(labels)
    work = tmp_path / "work"
    shutil.copytree(REPO / "config", work / "config")
    first = snakemake(work, config, "results/split/autopet/split.tsv")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    plan = snakemake(work, config, "-n")
    assert plan.returncode == 0, plan.stdout[-3000:] + plan.stderr[-3000:]
    jobs = planned_jobs(plan)
    assert jobs["preprocess"] == 8 and jobs["slice"] == 8
    for rule in ("train", "generate", "evaluate", "segmenter", "utility", "audit_shared", "export", "model_card"):
        assert jobs[rule] == 1, rule
