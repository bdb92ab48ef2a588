"""A study cropped and saved again in DICOM's order: the copy the same-study checks must find."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medsynth.data.phantom import make_case
from medsynth.io.nifti import save_volume

SHAPE, SPACING = (64, 64, 24), (5.0, 5.0, 4.0)


def cropped_copy(label: np.ndarray, affine: np.ndarray, x: slice, y: slice, z: slice) -> tuple[np.ndarray, np.ndarray]:
    """The voxels in the window, stored in DICOM's LPS order (x and y reversed), with the affine that keeps
    every voxel where it was in the patient."""
    crop = label[x, y, z]
    corner = affine @ np.array([x.start, y.start, z.start, 1.0])
    lps = np.diag([-1.0, -1.0, 1.0, 1.0])
    lps[:2, 3] = [crop.shape[0] - 1, crop.shape[1] - 1]
    moved = affine.copy()
    moved[:3, 3] = corner[:3]
    return np.ascontiguousarray(crop[::-1, ::-1]), moved @ lps


def phantom_maps(folder: Path, n: int, seed: int = 5) -> list[tuple[Path, np.ndarray, np.ndarray]]:
    """(path, label, affine) of ``n`` phantom patients' label maps written to ``folder``: real anatomy's
    size on a 64-px grid, a dozen labels per slice."""
    out = []
    for i in range(n):
        case = make_case(i, seed=seed, shape=SHAPE, spacing=SPACING)
        out.append((save_volume(folder / f"c{i}.nii.gz", case.label, case.affine), case.label, case.affine))
    return out


def body_box_copy(label: np.ndarray, affine: np.ndarray, z: slice) -> tuple[np.ndarray, np.ndarray]:
    """``cropped_copy`` of the slices ``z`` cut to the box of the labels (air only: no label is cut)."""
    xs, ys = np.nonzero((label > 0).any(axis=2))
    assert xs.min() > 0 and ys.min() > 0  # air around the body
    crop, moved = cropped_copy(label, affine, slice(xs.min(), xs.max() + 1), slice(ys.min(), ys.max() + 1), z)
    assert (crop > 0).sum() == (label[:, :, z] > 0).sum()
    return crop, moved
