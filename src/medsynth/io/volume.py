"""A volume with its geometry, whichever file format it came from (NIfTI, a DICOM series)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


class VolumeError(ValueError):
    """A volume file that cannot be used; the message names the file."""


@dataclass(frozen=True)
class Volume:
    array: np.ndarray
    affine: np.ndarray
    path: Path | None = None

    @property
    def spacing(self) -> np.ndarray:
        return voxel_spacing(self.affine)


def voxel_spacing(affine: np.ndarray) -> np.ndarray:
    """Length of each voxel axis in world units (mm)."""
    return np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
