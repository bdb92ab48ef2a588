"""Three-plane FID/KID: generated volumes seen as axial, coronal and sagittal slices.

A generator of axial slices is judged on axial slices by FID; its volumes
are also looked at from the side, where slices that do not belong together
show as stripes. Coronal and sagittal planes are cut from each case's stack
of axial slices (the preprocessed grid, cropped), resampled along z to the
in-plane spacing (linear) so anatomy keeps its proportions, and padded with
air to a square, which Inception then resizes as it resizes axial slices.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from scipy import ndimage

from medsynth.io.images import coronal, sagittal, stack

SIDE_PLANES = ("coronal", "sagittal")


def isotropic(volume: np.ndarray, spacing_xy: float, spacing_z: float) -> np.ndarray:
    """(H, W, Z) volume resampled along z to the in-plane spacing (linear); at least one row deep."""
    factor = spacing_z / spacing_xy
    if volume.shape[2]:
        # A stack thinner than half an in-plane voxel (one 3 mm slice on a 6 mm grid) rounded to no row: its
        # planes were pure air on both sides, and a generator drawing anything scored FID 0 on them.
        factor = max(factor, 1.0 / volume.shape[2])
    if abs(factor - 1) < 1e-6:
        return volume
    return ndimage.zoom(volume, (1, 1, factor), order=1, mode="nearest", grid_mode=True)


def _square(panel: np.ndarray, size: int | None = None, fill: float = -1.0) -> np.ndarray:
    """``panel`` centred on a ``size`` x ``size`` square of ``fill`` (default: its larger side)."""
    size = max(panel.shape) if size is None else size
    out = np.full((size, size), fill, dtype=np.float32)
    r0, c0 = (size - panel.shape[0]) // 2, (size - panel.shape[1]) // 2
    out[r0:r0 + panel.shape[0], c0:c0 + panel.shape[1]] = panel
    return out


def side_planes(images: np.ndarray, masks: np.ndarray, z: np.ndarray, spacing_xy: float, spacing_z: float,
                plane: str) -> np.ndarray:
    """Every ``plane`` (coronal or sagittal) cut of one case's stack that crosses its body, (m, S, S)."""
    if plane not in SIDE_PLANES:
        raise ValueError(f"plane must be one of {SIDE_PLANES}, got {plane!r}")
    if len(z) == 0 or not np.asarray(masks).any():  # a case whose slicing kept no slice, or no body
        return np.zeros((0, 1, 1), np.float32)
    vol = isotropic(stack(np.asarray(images, np.float32), z, -1.0), spacing_xy, spacing_z)
    body = np.asarray(masks).any(axis=0)  # (H, W): which planes cross the body
    cut, keep = (coronal, body.any(axis=0)) if plane == "coronal" else (sagittal, body.any(axis=1))
    panels = [_square(cut(vol, k)) for k in np.flatnonzero(keep)]
    return np.stack(panels) if panels else np.zeros((0, 1, 1), np.float32)


def side_plane_size(shape: tuple[int, int], z: np.ndarray, spacing_xy: float, spacing_z: float, plane: str) -> int:
    """The side of the squares ``side_planes`` cuts from a stack of (H, W) = ``shape`` slices at ``z``,
    found without its images (zooming an empty column gives the resampled depth): a set of cases is
    padded to its largest before any case is cut, so cases can be cut one at a time."""
    depth = isotropic(np.zeros((1, 1, int(np.max(z) - np.min(z) + 1)), np.float32), spacing_xy, spacing_z).shape[2]
    return max(depth, shape[0] if plane == "coronal" else shape[1])


def padded(cuts: np.ndarray, size: int) -> np.ndarray:
    """Cuts (m, a, b) each centred on a ``size`` x ``size`` square of air, (m, size, size)."""
    return np.stack([_square(p, size) for p in cuts])


def plane_sets(volumes: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, float, float]]
               ) -> dict[str, torch.Tensor]:
    """(images, masks, z, spacing_xy, spacing_z) per volume -> per side plane, all its cuts (N, 1, S, S).

    Cuts of differently sized volumes are padded to the largest square.
    """
    out = {}
    for plane in SIDE_PLANES:
        cuts = [side_planes(im, m, z, sxy, sz, plane) for im, m, z, sxy, sz in volumes]
        size = max((c.shape[-1] for c in cuts if len(c)), default=1)
        squares = [padded(c, size) for c in cuts if len(c)]
        out[plane] = torch.from_numpy(np.concatenate(squares))[:, None] if squares else torch.zeros(0, 1, 1, 1)
    return out
