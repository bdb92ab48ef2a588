"""Checks of one case's volumes: before preprocessing writes anything, and of a synthetic volume against its label map."""

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
        if not same_grid_up_to_orientation(image.array.shape, image.affine, other.array.shape, other.affine, atol):
            raise
    return other.affine


def same_grid_up_to_orientation(shape_a: tuple[int, ...], affine_a: np.ndarray, shape_b: tuple[int, ...],
                                affine_b: np.ndarray, atol: float = 1e-3) -> bool:
    """True when two grids are one physical grid, stored in possibly different axis orders and directions."""
    canonical_a, canonical_b = canonical_grid(shape_a, affine_a), canonical_grid(shape_b, affine_b)
    return canonical_a[0] == canonical_b[0] and np.abs(canonical_a[1] - canonical_b[1]).max() <= atol


def check_has_labels(classes: np.ndarray, path: object, table: LabelTable) -> None:
    """Refuse a label map whose class ids (on the training grid) are all background."""
    if not classes.any():
        raise LabelError(
            f"{path}: the label map holds only background (class {table.names[0]!r}, values "
            f"{list(table.values[0])}); nothing to train on. Check that it is this case's label map "
            "(an empty segmentation?), or remove the case from the cases table"
        )


def check_ct_has_air(path: object, lowest: float, threshold: float, label: np.ndarray) -> None:
    """Refuse a CT without a voxel below the body threshold where the labels leave voxels unclaimed: raw
    scanner values without their intercept (air 24) made the whole field of view body, the body class filling
    the air, without a word. A field of view the labels fill (a large patient) is taken."""
    if lowest > threshold and bool((label == 0).any()):
        raise ValueError(f"{path}: no voxel below the body threshold ({threshold:g} HU; lowest {lowest:g}), so the "
                         "whole field of view would be body: is this CT in Hounsfield units (air about -1000)? "
                         "Check its rescale slope and intercept (scl_slope, scl_inter; DICOM RescaleIntercept). A "
                         "field of view without any air needs a body mask (the mask column or layout.mask)")


def tissue_at_background(image: np.ndarray, label: np.ndarray, background: float) -> float:
    """The fraction of a label map's labelled voxels whose image voxel holds the background value: 0 when
    generated tissue lies under every label (generation keeps tissue above that value; an integer image,
    CT in HU, is compared with the value rounded as it was written)."""
    labelled = label > 0
    total = int(np.count_nonzero(labelled))
    if not total:
        return 0.0
    if np.issubdtype(image.dtype, np.integer):
        background = float(np.rint(background))
    return int(np.count_nonzero(image[labelled] == background)) / total
