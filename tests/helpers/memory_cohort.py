"""A synthetic cohort in the files evaluate and utility read, of any size, and the peak memory of a stage
run on it in a fresh process (``memory_run.py``): the memory test and ``bench/memory.py`` share them.

The anatomy is cheap and deterministic: a body disc holding two organ discs that move along z, CT-like
intensities per class plus noise; generated samples are the real slices plus other noise, so every metric
has something to compute. No Inception weights (their statistics say ``available: False``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from medsynth.data.intensity import IntensityMap
from medsynth.data.slicing import CaseSlices

NAMES = ["background", "liver", "kidney", "body"]  # the table written (body last, as from_config puts it)
LEVELS = np.array([-1.0, 0.1, 0.3, -0.1], np.float32)  # [-1, 1] intensity per class
SPACING = [6.0, 6.0, 6.0]
RUNNER = Path(__file__).with_name("memory_run.py")


def _case(rng: np.random.Generator, slices: int, size: int) -> CaseSlices:
    yy, xx = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    labels = np.zeros((slices, size, size), np.uint8)
    c = size / 2
    for k in range(slices):
        labels[k][(xx - c) ** 2 + (yy - c) ** 2 < (0.42 * size) ** 2] = 3
        shift = 0.12 * size * np.sin(k / 5.0)
        labels[k][(xx - c + 0.15 * size + shift) ** 2 + (yy - c) ** 2 < (0.14 * size) ** 2] = 1
        labels[k][(xx - c - 0.2 * size) ** 2 + (yy - c + shift) ** 2 < (0.08 * size) ** 2] = 2
    images = LEVELS[labels] + rng.normal(0, 0.03, labels.shape).astype(np.float32)
    images = np.clip(np.where(labels > 0, images, -1.0), -1, 1).astype(np.float32)
    return CaseSlices(images, labels, (labels > 0).astype(np.uint8), np.arange(slices, dtype=np.int32),
                      np.zeros((slices, 2), np.int32))


def _samples(path: Path, real: CaseSlices, samples: int, rng: np.random.Generator) -> None:
    noise = rng.normal(0, 0.05, (samples, *real.images.shape)).astype(np.float32)
    fakes = np.clip(np.where(real.masks > 0, real.images + noise, -1.0), -1, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, samples=fakes.astype(np.float16), z=real.z)


def _meta(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"modality": "CT", "spacing": SPACING,
                                "intensity": IntensityMap.window(-1000.0, 1000.0).to_meta()}))


def write_cohort(root: Path, test_cases: int, train_cases: int, slices: int = 32, size: int = 64,
                 samples: int = 2, seed: int = 0) -> dict:
    """Test and training cases of one dataset (paired: it is its own image dataset), every case generated
    ``samples`` times, as the workflow lays them out; a segmenter and Inception statistics without weights.
    Returns the paths the stages take (JSON-ready)."""
    import torch

    from medsynth.models.segmenter import UNetSegmenter, save_segmenter

    rng = np.random.default_rng(seed)
    root = Path(root)
    parts = {"test": [f"test{i:03d}" for i in range(test_cases)], "train": [f"train{i:03d}" for i in range(train_cases)]}
    files: dict = {"test": [], "train": [], "meta": []}
    for part, cases in parts.items():
        for case in cases:
            real = _case(rng, slices, size)
            files[part].append(str(real.save(root / "slices" / case / "slices.npz")))
            _samples(root / "generate" / "cases" / case / "samples.npz", real, samples, rng)
            _meta(root / "preprocess" / case / "meta.json")
            if part == "test":
                files["meta"].append(str(root / "preprocess" / case / "meta.json"))
    split = root / "split.tsv"
    split.write_text("case_id\tpatient_id\tpart\n" + "".join(f"{c}\tp_{c}\t{part}\n" for part, cases in parts.items()
                                                             for c in cases))
    # generate's manifest: the utility curve's synthetic cases and their patients (the slices' dataset folder is root).
    (root / "generate" / "manifest.tsv").write_text(
        "case_id\tdataset\tsource_case\tpatient_id\tpart\n"
        + "".join(f"{c}\t{root.name}\t{c}\tp_{c}\t{part}\n" for part, cases in parts.items() for c in cases))
    for part in ("test", "train"):
        np.savez(root / f"inception_{part}.npz", available=False)
    with torch.random.fork_rng(devices=[]):  # the same untrained weights whatever ran before
        torch.manual_seed(0)
        untrained = UNetSegmenter(len(NAMES), channels=(4, 8)).eval()
    segmenter = save_segmenter(untrained, root / "segmenter.pt", len(NAMES), (4, 8), NAMES)
    return {**files, "cases_dir": str(root / "generate" / "cases"), "manifest": str(root / "generate" / "manifest.tsv"),
            "split": str(split),
            "segmenter": str(segmenter), "real_stats": str(root / "inception_test.npz"),
            "train_stats": str(root / "inception_train.npz"), "names": NAMES}


def peak_memory(stage: str, cohort: dict, folder: Path, timeout: float = 300) -> dict:
    """``memory_run.py``'s report of ``stage`` run on ``cohort`` in a fresh process: the peak resident set
    (``peak_mb``) and the resident set after the imports, before the stage (``ready_mb``), in MB."""
    spec = Path(folder) / f"{stage}.json"
    spec.write_text(json.dumps(cohort))
    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    import os

    out = subprocess.run([sys.executable, str(RUNNER), stage, str(spec)], capture_output=True, text=True,
                         timeout=timeout, env={**os.environ, **env}, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{stage} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def write_generation_cohort(root: Path, cases: int, shape: tuple[int, int, int], size: int = 32) -> dict:
    """Phantom CT cases of ``shape`` (source grid) preprocessed and sliced as the workflow does, and a tiny
    exported generator (random weights): what ``generate_cases`` reads. Returns the paths (JSON-ready)."""
    import torch

    from medsynth.data.labels import LabelTable
    from medsynth.data.phantom import PHANTOM_LABELS, make_case
    from medsynth.data.preprocess import PreprocessSettings, preprocess_case
    from medsynth.data.slicing import SliceSettings, slice_case
    from medsynth.io.nifti import load_volume, save_volume
    from medsynth.models import build_generator
    from medsynth.models.registry import ModelSpec
    from medsynth.io.checkpoint import save_checkpoint

    labels = [{"name": n, "values": [v]} for v, n in sorted(PHANTOM_LABELS.items())]
    table = LabelTable.from_config(labels)
    root = Path(root)
    label_cases = []
    for i in range(cases):
        case = make_case(i, seed=0, shape=shape, spacing=(6.0, 6.0, 6.0))
        src, pre = root / "src" / f"c{i}", root / "pre" / f"c{i}"
        save_volume(src / "ct.nii.gz", case.ct, case.affine)
        save_volume(src / "label.nii.gz", case.label, case.affine)
        preprocess_case(f"c{i}", src / "ct.nii.gz", src / "label.nii.gz", pre, table,
                        PreprocessSettings(modality="CT", spacing_xy=None, ct_window=(-1000, 1000)))
        volumes = [load_volume(pre / f"{n}.nii.gz").array for n in ("image", "label", "mask")]
        sliced = slice_case(volumes[0].astype(np.float32), volumes[1], volumes[2], SliceSettings(size, 0.05))
        slices = sliced.save(root / "slices" / f"c{i}" / "slices.npz")
        label_cases.append([f"c{i}", str(slices), str(pre), "test", "phantom", f"c{i}", f"c{i}"])
    spec = ModelSpec(g_channels=(16, 16, 8), d_channels=(8, 16), z_dim=4, spade_hidden=8)
    torch.manual_seed(0)
    G = build_generator(spec, table.num_classes)
    generator = save_checkpoint(root / "generator.pt", {
        "ema": G.state_dict(), "model": spec.to_dict(), "num_classes": table.num_classes,
        "data": {"labels": labels, "slice": {"size": size}, "modality": "CT", "mode": "paired",
                 "preprocess": {"ct_window": [-1000, 1000]}}})
    return {"label_cases": label_cases, "generator": str(generator), "out": str(root / "out")}
