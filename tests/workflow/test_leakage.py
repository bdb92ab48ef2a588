"""No test patient in anything shared: configs that would leak one stop when Snakemake loads them (dry runs).

Four cases phantom_000..003 split 0.5 / 0.25 / 0.25 with seed 0 put phantom_002 in test (the small-cohort
rule moves it there); three cases phantom_000, 001, 003 put phantom_000 in test.
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest

from medsynth.data.phantom import PHANTOM_LABELS, make_case, write_cohort
from medsynth.io.nifti import save_volume

LABELS = [{"name": n, "values": [v]} for v, n in sorted(PHANTOM_LABELS.items())]


def local(root: Path, label_only: bool = False) -> dict:
    layout = {"label": "{case}/label.nii.gz"} if label_only else {"image": "{case}/ct.nii.gz",
                                                                   "label": "{case}/label.nii.gz"}
    return {"source": "local", "modality": "CT", "local": {"root": str(root)}, "layout": layout, "labels": LABELS,
            "preprocess": {"spacing_xy": 12.0}}


def cohort(folder: Path, drop: tuple[str, ...] = ()) -> Path:
    """Tiny NIfTI cases <case>/{ct,label}.nii.gz, phantom_000..003 less ``drop``."""
    write_cohort(folder, 4, seed=5, shape=(48, 48, 6), spacing=(8.0, 8.0, 8.0))
    for case in drop:
        shutil.rmtree(folder / case)
    return folder


def experiment(dataset: str, **kw) -> dict:
    return {"dataset": dataset, "train": {"model": "tiny", **kw.pop("train", {})}, **kw}


def leaking_config(name: str, tmp: Path) -> dict:
    datasets = {"mine": local(cohort(tmp / "mine"))}
    experiments = {"e": experiment("mine")}
    export: dict = {}
    if name == "export_test":
        export["splits"] = ["train", "test"]
    elif name == "generate_from_trained":
        datasets["other"] = local(cohort(tmp / "other"))
        experiments["f"] = experiment("other", generate_from=["mine"])
    elif name == "generate_from_test_patient":  # label maps of the same patients (e.g. TotalSegmentator's)
        datasets["maps"] = local(cohort(tmp / "maps"), label_only=True)
        experiments["e"]["generate_from"] = ["maps"]
    elif name == "include_real":
        datasets["three"] = local(cohort(tmp / "three", drop=("phantom_002",)))
        experiments = {"v": experiment("three", images_from="mine", train={"mode": "unpaired"})}
        export["include_real"] = True
    return {"datasets": datasets, "slice": {"size": 32},
            "split": {"seed": 0, "ratios": {"train": 0.5, "val": 0.25, "test": 0.25}},
            "experiments": experiments, "generate": {"splits": ["train", "test"]}, "export": export}


EXPECTED = {
    "export_test": ["config: export.splits holds test", "experiments.e's export", "datasets.mine's test part",
                    "patients phantom_002"],
    "generate_from_trained": ["config: experiments.f.generate_from names 'mine', which experiments.e.dataset trains",
                              "patients phantom_002"],
    "generate_from_test_patient": ["config: experiments.e.generate_from names 'maps', whose patients phantom_002 "
                                   "are in the test part of datasets.mine"],
    "include_real": ["config: export.include_real ships experiments.v's real cases of datasets.mine's train part, "
                     "but its patients phantom_000 are in the test part of datasets.three"],
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_config_that_would_share_a_test_patient_stops_when_loaded(tmp_path, snakemake, name):
    work = tmp_path / "work"
    work.mkdir()
    result = snakemake(work, leaking_config(name, tmp_path), "-n")
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "Job stats" not in output, output[-3000:]
    for needle in EXPECTED[name]:
        assert needle in output, (needle, output[-3000:])


def test_the_same_datasets_without_the_leak_load(tmp_path, snakemake):
    config = leaking_config("generate_from_test_patient", tmp_path)
    shutil.rmtree(tmp_path / "maps" / "phantom_002")  # the test patient's label map removed
    (tmp_path / "work").mkdir()
    result = snakemake(tmp_path / "work", config, "-n", "results/split/mine/split.tsv")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]


@pytest.mark.slow
def test_a_downloaded_generate_from_case_named_like_an_own_case_stops_the_run_before_training(tmp_path, snakemake):
    """A url dataset's cases are known only once downloaded (the config check cannot see them): own case
    'maps.x' and generate_from dataset maps' 'x' would share generate's folder cases/maps.x/. Asked for training
    alone, the run stops after the downloads, before any training job."""
    mine = cohort(tmp_path / "mine")
    (mine / "phantom_003").rename(mine / "maps.x")
    other = make_case(0, seed=9, shape=(48, 48, 6), spacing=(8.0, 8.0, 8.0))
    archive = tmp_path / "maps.zip"
    save_volume(tmp_path / "maps" / "x.nii.gz", other.label, other.affine)
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(tmp_path / "maps" / "x.nii.gz", "Maps/x.nii.gz")
    maps = {"source": "url", "modality": "CT", "url": {"href": archive.resolve().as_uri()},
            "layout": {"label": "Maps/{case}.nii.gz"}, "labels": LABELS, "preprocess": {"spacing_xy": 12.0}}
    config = {"datasets": {"mine": local(mine), "maps": maps}, "slice": {"size": 32},
              "split": {"seed": 0, "ratios": {"train": 0.5, "val": 0.25, "test": 0.25}},
              "experiments": {"e": experiment("mine", generate_from=["maps"])},
              "metrics": {"perceptual": "off", "weights_dir": str(tmp_path / "weights")}}
    work = tmp_path / "work"
    work.mkdir()
    result = snakemake(work, config, "results/train/e/metrics.tsv")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert ("experiments.e: case 'maps.x' of datasets.mine and case 'x' of datasets.maps would both be written to "
            "results/generate/e/cases/maps.x/") in output, output[-3000:]
    assert (work / "resources/raw/maps/cases.tsv").is_file()  # found once downloaded ...
    assert not (work / "results/train").exists() and not (work / "logs/train").exists()  # ... before training
