"""Checks of one case's volumes that preprocessing makes before it writes anything."""

from __future__ import annotations

import numpy as np

from medsynth.data.geometry import canonical_grid
from medsynth.data.labels import LabelError, LabelTable
from medsynth.io.nifti import Volume, VolumeError, check_same_grid


def reorientation_affine(image: Volume, other: Volume, atol: float = 1e-3) -> np.ndarray:
    """The affine to reorient ``other`` (a label map or mask of ``image``) to RAS with.

    Stored on the image's grid: the image's affine, so near-oblique affines a tolerance
    apart cannot pick different axes. Stored in another orientation of the same physical
    grid (e.g. an LPS label map of a RAS image): its own, which brings its voxels onto the
    image's canonical grid exactly. Any other grid is refused, naming both files.
    """
    try:
        check_same_grid(image, other, atol)
        return image.affine
    except VolumeError:
        shape_i, affine_i = canonical_grid(image.array.shape, image.affine)
        shape_o, affine_o = canonical_grid(other.array.shape, other.affine)
        if shape_i != shape_o or np.abs(affine_i - affine_o).max() > atol:
            raise
    return other.affine


def check_has_labels(classes: np.ndarray, path: object, table: LabelTable) -> None:
    """Refuse a label map whose class ids (on the training grid) are all background."""
    if not classes.any():
        raise LabelError(
            f"{path}: the label map holds only background (class {table.names[0]!r}, values "
            f"{list(table.values[0])}); nothing to train on. Check that it is this case's label map "
            "(an empty segmentation?), or remove the case from the cases table"
        )
