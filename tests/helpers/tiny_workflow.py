"""The tiny workflow the slow tests run: its config, and what a dry run plans."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

LABELS = [{"name": n, "values": [i]} for i, n in enumerate(
    ["background", "body", "muscle", "liver", "spleen", "kidney", "lung", "bone", "aorta", "bowel_gas"])]
TINY = {
    "datasets": {
        "phantom": {
            "source": "phantom",
            "modality": "CT",
            "phantom": {"n_cases": 4, "seed": 1, "shape": [64, 64, 10], "spacing": [6.0, 6.0, 8.0]},
            "labels": LABELS,
            "preprocess": {"spacing_xy": 12.0},
        },
        # Image-only (no labels): the unpaired mode's real images, as unlabelled MR scans are.
        "phantom_mr": {
            "source": "phantom",
            "modality": "MR",
            "phantom": {"n_cases": 4, "seed": 2, "shape": [64, 64, 10], "spacing": [6.0, 6.0, 8.0]},
            "preprocess": {"spacing_xy": 12.0},
        },
        # Label maps without images (as TotalSegmentator's output on other patients' CTs): the fixture
        # writes them and sets local.root; "tiny" generates images for them.
        "labels_only": {
            "source": "local",
            "modality": "CT",
            "local": {"root": "set-by-the-fixture"},
            "layout": {"label": "{patient}/{study}/label.nii.gz"},
            "labels": LABELS,
            "preprocess": {"spacing_xy": 12.0},
        },
    },
    "slice": {"size": 32},
    "split": {"seed": 0, "ratios": {"train": 0.5, "val": 0.25, "test": 0.25}},
    # One thread for every job, as the demo: on 2 cores the two experiments' chains run side by side
    # (the schema's 2 to 4 threads ran the run's 60 jobs one at a time: 198 s).
    "experiments": {
        "tiny": {"dataset": "phantom", "generate_from": ["labels_only"], "threads": 1, "train": {
            "steps": 12, "batch_size": 2, "eval_every": 6, "sample_every": 6, "checkpoint_every": 6, "device": "cpu",
            "val_max_slices": 4, "mask_threshold": 0.0}},  # not the default: evaluation must use it
        "tiny-unpaired": {"dataset": "phantom", "images_from": "phantom_mr", "select_metric": "intensity_w1",
                          "threads": 1,
                          "train": {"mode": "unpaired", "steps": 8, "batch_size": 2, "eval_every": 4,
                                    "sample_every": 8, "checkpoint_every": 4, "r1_every": 2, "device": "cpu",
                                    "val_max_slices": 4}},
    },
    "generate": {"samples": 2, "splits": ["train", "test"], "threads": 1},
    "export": {"include_real": True},
    # Random weights the fixture writes: the FID/KID/LPIPS code runs for real, offline.
    "metrics": {"perceptual": "required", "check_hash": False, "kid_subsets": 5, "kid_subset_size": 20,
                "segmenter_steps": 20, "threads": 1, "segmenter_threads": 1},
    "report": {"dpi": 50, "grid_rows": 3},
}


def planned_rules(result: subprocess.CompletedProcess) -> set[str]:
    """Rule names in the dry run's job table."""
    return set(planned_jobs(result))


def label_only_cohort(root: Path) -> Path:
    """Label maps without images shaped like a real cohort's: two studies of one patient
    (``P9/s1``, ``P9/s2``: ``{patient}/{study}/label.nii.gz``), the second stored LPS, both with 7.5 mm
    columns beside 6 mm rows (a body of ~435 mm, wider than the 384 mm of the 32-px crop at 12 mm), and
    the top slice of the second labelled only in a 3 x 3 patch of muscle at the edge of the body (a slice
    with little body)."""
    import nibabel as nib
    import numpy as np

    from medsynth.data.phantom import make_case
    from medsynth.io.nifti import save_volume

    for index, study in enumerate(("s1", "s2")):
        case = make_case(index, seed=9, shape=(64, 64, 10), spacing=(6.0, 6.0, 8.0))
        label, affine = case.label.copy(), case.affine.copy()
        affine[:3, 0] *= 7.5 / 6.0
        if study == "s2":
            top = label[..., -1]
            xs, ys = np.nonzero(top)
            edge = int(np.argmin(xs))
            top[:] = 0
            top[xs[edge]:xs[edge] + 3, ys[edge]:ys[edge] + 3] = 2
        save_volume(root / "P9" / study / "label.nii.gz", label, affine)
        assert nib.aff2axcodes(affine) == (("R", "A", "S") if index == 0 else ("L", "P", "S"))
    return root


def test_map_copy(phantom_cases: Path, root: Path) -> str:
    """A copy of the phantom dataset's test label map in the label-only cohort under another patient
    (``P7/s1``), as TotalSegmentator's output of a test study saved again where a generate_from dataset
    reads: generation must leave it out. ``phantom_cases``: the phantom's downloaded ``cases.tsv`` (files
    are compressed with their time: only a copy of the downloaded file has its bytes). Returns the test
    case's id."""
    import shutil

    from medsynth.data.cohort import read_cases
    from medsynth.data.split import split_table

    rows = read_cases(phantom_cases)
    split = TINY["split"]
    (test,) = [r["case_id"] for r in split_table(rows, split["ratios"], split["seed"]) if r["part"] == "test"]
    (root / "P7" / "s1").mkdir(parents=True)
    shutil.copyfile(next(r["label"] for r in rows if r["case_id"] == test), root / "P7" / "s1" / "label.nii.gz")
    return test


def planned_jobs(result: subprocess.CompletedProcess) -> dict[str, int]:
    """Jobs per rule in the dry run's job table (without the total)."""
    table = result.stdout.split("Job stats:")[1].split("\n\n")[0] if "Job stats:" in result.stdout else ""
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m.group(1) != "total"}


def no_controller_env() -> dict[str, str]:
    """The environment for a Snakemake run that needs no SLURM: an scontrol that fails at once first
    on PATH (see no_slurm_controller/scontrol: 9 s saved on every start once SLURM is installed)."""
    import os

    shim = Path(__file__).resolve().parent / "no_slurm_controller"
    return {**os.environ, "PATH": f"{shim}{os.pathsep}{os.environ.get('PATH', '')}"}
