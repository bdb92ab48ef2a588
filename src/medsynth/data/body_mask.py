"""The body in a scan: tissue (CT threshold, MR above its air noise), holes filled, opened, the components
that are body kept, skin detail given back. Slice-wise morphology shared with generation and metrics."""

from __future__ import annotations

import logging
import math

import numpy as np
from scipy import ndimage

from medsynth.data.geometry import per_slab

log = logging.getLogger(__name__)


def open_inplane(
    mask: np.ndarray, radius_mm: float, spacing_xy: tuple[float, float], workers: int = 1
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Morphological opening of every axial slice with a square of half-width ``radius_mm``; also returns the size.

    Min/max filters are separable, so this costs a few passes over the
    volume whatever the radius (a disk costs ~radius^2 per voxel). A radius
    below one voxel is rounded up to one: a single-pixel element would turn
    the opening into a silent no-op.
    """
    size = tuple(2 * max(1, int(radius_mm / s)) + 1 for s in spacing_xy) + (1,)
    m = mask.view(np.uint8) if mask.dtype == bool else mask.astype(np.uint8)
    opened = per_slab(lambda v: ndimage.maximum_filter(ndimage.minimum_filter(v, size=size), size=size), m, workers)
    return opened.astype(bool), size


def fill_holes_inplane(mask: np.ndarray, workers: int = 1) -> np.ndarray:
    """Fill holes (lungs, bowel gas) slice by slice, working only inside the mask's bounding box."""
    if not mask.any():
        return mask
    box = tuple(slice(int(np.flatnonzero(a)[0]), int(np.flatnonzero(a)[-1]) + 1)
                for a in (mask.any(axis=(1, 2)), mask.any(axis=(0, 2)), mask.any(axis=(0, 1))))
    out = mask.copy()
    planar = ndimage.generate_binary_structure(2, 1)[:, :, None]
    out[box] = per_slab(lambda v: ndimage.binary_fill_holes(v, structure=planar), mask[box], workers)
    return out


_INPLANE = np.pad(np.ones((3, 3, 1), bool), ((0, 0), (0, 0), (1, 1)))  # neighbours within a slice


def largest_component(mask: np.ndarray, seeds: np.ndarray | None = None, inplane: bool = False) -> np.ndarray:
    """The largest component of ``mask`` (3D, or ``inplane`` each slice's own) and every one holding a ``seeds``
    voxel."""
    labels, n = ndimage.label(mask, structure=_INPLANE if inplane else None)
    if n <= 1:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    keep = labels == sizes.argmax()
    if seeds is not None:
        seeded = np.unique(labels[seeds & mask])
        keep |= np.isin(labels, seeded[seeded > 0])
    return keep


def body_mask(tissue: np.ndarray, spacing_xy: tuple[float, float], opening_mm: float, workers: int = 1,
              seeds: np.ndarray | None = None) -> np.ndarray:
    """Body = tissue with holes filled, opened, largest 3D component (and every one holding a labelled
    voxel, ``seeds``: arms apart from the trunk had become air around labelled bones), edges given back.

    Holes (lungs, bowel gas) are filled first, so an opening that thins the chest wall cannot open the
    lungs to the outside. The opening cuts thin bridges (table pad, cables) before the largest component
    is chosen; the skin detail it shaved off is then restored from the tissue within one element of the
    body, which a table further away does not reach.
    """
    filled = fill_holes_inplane(tissue, workers)
    opened, size = open_inplane(filled, opening_mm, spacing_xy, workers)
    if not opened.any():
        return opened
    body = largest_component(opened, seeds)
    grown = per_slab(lambda v: ndimage.maximum_filter(v, size=size), body.view(np.uint8), workers)
    # Only what joins the body in its own slice: pieces of the table within one element of the back came
    # back as islands (in 3D they join the body through other slices).
    return largest_component(grown.astype(bool) & filled, body, inplane=True)


# Median of a Rayleigh distribution in units of its sigma: the magnitude of complex Gaussian
# noise, i.e. what an MR scanner records in air.
_RAYLEIGH_MEDIAN = math.sqrt(2.0 * math.log(2.0))
_NOISE_SIGMAS = 4.0  # air exceeds 4 sigma with probability exp(-8) = 3e-4; the opening removes such specks


def mr_tissue(image: np.ndarray, fraction: float, workers: int = 1) -> np.ndarray:
    """MR voxels brighter than both ``fraction`` of the 99th percentile and 4x the air's noise level.

    The air of a real MR is not dark: it holds Rician noise of a few per cent of
    tissue intensity. Smoothing before a low threshold (what one would do
    against that noise) spreads the bright skin into the air and takes a band
    of air into the mask. Instead a 3 x 3 in-plane median removes noise
    specks without moving edges, and the threshold sits above the noise, whose
    level (sigma) comes from the median of the darkest voxels, mostly air.
    """
    img = image.astype(np.float32, copy=False)
    floor = fraction * float(np.percentile(img, 99))
    dark = img[img < floor]
    sigma = float(np.median(dark)) / _RAYLEIGH_MEDIAN if dark.size else 0.0
    threshold = max(floor, _NOISE_SIGMAS * sigma)
    denoised = per_slab(lambda v: ndimage.median_filter(v, size=(3, 3, 1)), img, workers)
    log.info("MR tissue threshold %.4g (%.3g of the 99th percentile; air noise sigma %.3g)", threshold,
             fraction, sigma)
    return denoised > threshold
