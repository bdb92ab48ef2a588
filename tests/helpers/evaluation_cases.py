"""Small test sets for the evaluation tests: phantom cases through preprocessing and slicing, samples.npz
beside them, and level cases (one intensity per class) labelled by a given table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from medsynth.data.labels import LabelTable
from medsynth.data.phantom import PHANTOM_LABELS, make_case
from medsynth.data.slicing import CaseSlices
from medsynth.io.nifti import save_volume

PHANTOM_TABLE = LabelTable.from_config([{"name": n, "values": [v]} for v, n in sorted(PHANTOM_LABELS.items())])
GRID = dict(shape=(96, 96, 12), spacing=(4.0, 4.0, 6.0))


def phantom_slices(root: Path, modality: str, prepare, indices=(0, 1)) -> list[Path]:
    """Phantom cases written as NIfTI and run through ``prepare`` (the conftest's preprocess_and_slice):
    their slices.npz under <root>/<modality><i>/<modality><i>/, meta.json under .../pre/."""
    files = []
    for i in indices:
        case = make_case(i, seed=0, **GRID)
        folder = root / f"{modality}{i}"
        save_volume(folder / "image.nii.gz", case.ct if modality == "CT" else case.mr, case.affine)
        save_volume(folder / "label.nii.gz", case.label, case.affine)
        slices = prepare(folder / "pre", folder / "image.nii.gz", folder / "label.nii.gz", PHANTOM_TABLE, modality,
                         96)
        files.append(slices.save(folder / folder.name / "slices.npz"))
    return files


def write_samples(real_files: list[Path], make_fake, samples: int = 2) -> list[tuple[str, Path, Path]]:
    """samples.npz beside each case's slices: ``make_fake(real images, case index, k)`` per sample."""
    cases = []
    for c, real_file in enumerate(real_files):
        real = CaseSlices.load(real_file)
        fakes = np.stack([make_fake(real, c, k) for k in range(samples)]).astype(np.float16)
        gen = real_file.with_name("samples.npz")
        np.savez(gen, samples=fakes, z=real.z)
        cases.append((real_file.parent.name, real_file, gen))
    return cases


def perfect(real: CaseSlices, case: int, k: int) -> np.ndarray:
    return real.images


SEG_NAMES = ["background", "body", "liver", "kidney"]
LEVELS = {"background": -1.0, "body": 0.0, "liver": 0.6, "kidney": 0.2}  # the kidney is nearer the body


def anatomy(c: int, n: int) -> np.ndarray:
    """Case c's label map in SEG_NAMES' ids: a body with a liver and a kidney."""
    labels = np.zeros((n, 32, 32), np.uint8)
    labels[:, 4:28, 4:28] = 1
    labels[:, 8:18, 6 + c:16 + c] = 2
    labels[:, 20:26, 8:14] = 3
    return labels


def level_cases(root: Path, names: list[str], sizes=(3, 2)) -> list[Path]:
    """The same anatomy labelled by the table ``names`` (a class it lacks is body tissue), each class at its
    intensity in ``LEVELS``, and a meta.json per case."""
    files = []
    ids = np.array([names.index(n) if n in names else names.index("body") for n in SEG_NAMES])
    for c, n in enumerate(sizes):
        classes = anatomy(c, n)
        images = np.array([LEVELS[name] for name in SEG_NAMES], np.float32)[classes]
        slices = CaseSlices(images, ids[classes].astype(np.uint8), (classes > 0).astype(np.uint8),
                            np.arange(n, dtype=np.int32), np.zeros((n, 2), np.int32))
        files.append(slices.save(root / f"case{c}" / "slices.npz"))
        (root / f"case{c}" / "meta.json").write_text(json.dumps({"modality": "MR"}))
    return files
