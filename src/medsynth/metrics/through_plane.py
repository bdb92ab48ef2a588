"""Through-plane consistency: do neighbouring generated slices belong to one volume?

A volume of axial slices generated one by one can look right in every slice
and still be a stack of unrelated images, striped in a coronal or sagittal
view. Neighbouring slices of a real volume differ by what the anatomy and
the texture change over one slice spacing; the score compares that change in
generated volumes with real ones. Needs no pretrained weights.

Neighbours are compared at one physical distance: the label data and the
image data may have other slice spacings (6 mm and 3 mm: a perfect generator
read 1.9 when slices one index apart were compared). Each run of consecutive
slices of a volume is resampled along z to the common spacing first (linear
between its two neighbouring slices; the body mask of a slice between two is
the body of both). Each slice is then smoothed in-plane (Gaussian,
``SMOOTH_SIGMA`` pixels), so per-voxel noise, which differs between any two
slices, does not dominate; then, for every pair of neighbouring slices, the
absolute difference at the pixels inside both slices' body. Generated against
real:

- ``ratio``: mean difference, generated / real (1: as smooth along z as real
  volumes; a stack of unrelated slices reads well above 1);
- ``w1``: Wasserstein-1 distance between the two distributions of differences;
- ``ssim_ratio``: mean SSIM between neighbouring slices (inside the body),
  generated / real.

The real volumes themselves score ratio 1, W1 0 and SSIM ratio 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from scipy import ndimage

from medsynth.metrics.image import ssim
from medsynth.metrics.spilled import SpilledSample

SMOOTH_SIGMA = 2.0  # pixels (12 mm in the demo): takes out voxel noise, which differs between any two slices


def runs(z: np.ndarray) -> list[np.ndarray]:
    """Indices of each maximal run of consecutive z (slices are stored in z order; kept slices may have gaps)."""
    z = np.asarray(z)
    if np.any(np.diff(z) <= 0):
        raise ValueError(f"slices are not in increasing z order: {z.tolist()}")
    return np.split(np.arange(len(z)), np.flatnonzero(np.diff(z) != 1) + 1) if len(z) else []


def resample_run(images: np.ndarray, masks: np.ndarray, spacing: float,
                 target: float) -> tuple[np.ndarray, np.ndarray]:
    """A run of consecutive slices (n, H, W), ``spacing`` mm apart, resampled ``target`` mm apart from its first
    slice over its extent: linear between the two slices around each position, the body mask of both
    (a slice at a stored position keeps its own)."""
    images, masks = np.asarray(images, np.float32), np.asarray(masks) > 0
    if spacing <= 0 or target <= 0:
        raise ValueError(f"slice spacings must be positive, got {spacing} and {target} mm")
    count = int(np.floor((len(images) - 1) * spacing / target + 1e-6)) + 1
    position = np.arange(count) * (target / spacing)  # in stored slices
    lo = np.minimum(np.floor(position + 1e-6).astype(np.int64), len(images) - 1)
    hi = np.minimum(lo + 1, len(images) - 1)
    w = np.clip(position - lo, 0.0, 1.0)
    exact = w < 1e-6
    out = (1 - w)[:, None, None] * images[lo] + w[:, None, None] * images[hi]
    body = np.where(exact[:, None, None], masks[lo], masks[lo] & masks[hi])
    return out.astype(np.float32), body


def smooth(images: np.ndarray, sigma: float = SMOOTH_SIGMA) -> np.ndarray:
    """In-plane Gaussian smoothing of (n, H, W) slices, each on its own."""
    return ndimage.gaussian_filter(np.asarray(images, np.float32), sigma=(0, sigma, sigma), mode="nearest")


@dataclass
class NeighbourStats:
    """Differences between neighbouring slices, pooled over volumes: one number per in-body pixel of every
    pair (held up to a budget, spilled to a temporary file beyond it: ``metrics.spilled``) and one SSIM
    per pair."""
    differences: SpilledSample = field(default_factory=SpilledSample)
    ssim: list[np.ndarray] = field(default_factory=list)

    def add(self, images: np.ndarray, masks: np.ndarray, z: np.ndarray, sigma: float = SMOOTH_SIGMA,
            spacing: float = 1.0, target: float | None = None) -> None:
        """One volume's slices (n, H, W) in [-1, 1], their body masks and z indices, ``spacing`` mm apart:
        neighbours ``target`` mm apart (default: ``spacing``, one index apart) within each run of
        consecutive slices (``resample_run``)."""
        images, masks = np.asarray(images), np.asarray(masks)
        for run in runs(z):
            if len(run) > 1:
                self._add_stack(*resample_run(images[run], masks[run], spacing, target or spacing), sigma)

    def _add_stack(self, images: np.ndarray, masks: np.ndarray, sigma: float) -> None:
        """Every pair of neighbouring slices of an evenly spaced stack, inside both slices' body."""
        pairs = np.arange(len(images) - 1)
        both = masks[pairs] & masks[pairs + 1]
        keep = both.reshape(len(pairs), -1).any(axis=1)  # SSIM inside an empty body is undefined
        pairs, both = pairs[keep], both[keep]
        if pairs.size == 0:
            return
        s = smooth(images, sigma)
        self.differences.add(np.abs(s[pairs + 1] - s[pairs])[both])
        a = torch.from_numpy(images[pairs])[:, None]
        b = torch.from_numpy(images[pairs + 1])[:, None]
        self.ssim.append(ssim(a, b, 2.0, body=torch.from_numpy(both)[:, None].double()).numpy())

    def pooled_ssim(self) -> np.ndarray:
        return np.concatenate(self.ssim) if self.ssim else np.zeros(0)


W1_LEVELS = np.linspace(0, 1, 1001)  # W1: the mean |difference| of the two quantile functions at these levels


def scores(generated: NeighbourStats, real: NeighbourStats) -> dict[str, float]:
    """``ratio``, ``w1``, ``ssim_ratio`` and the underlying means; NaN where a side has no adjacent slices.
    ``w1``: between the two distributions of differences, from their exact quantiles (every difference
    of a test set counts) at ``W1_LEVELS``."""
    gd, rd = generated.differences, real.differences
    gs, rs = generated.pooled_ssim(), real.pooled_ssim()
    out = {k: float("nan") for k in ("ratio", "w1", "ssim_ratio", "mean_generated", "mean_real",
                                     "ssim_generated", "ssim_real")}
    out["pairs"] = int(gs.size)
    if len(gd) == 0 or len(rd) == 0:
        return out
    out.update(mean_generated=gd.mean(), mean_real=rd.mean(),
               ssim_generated=float(gs.mean()), ssim_real=float(rs.mean()))
    out["ratio"] = out["mean_generated"] / out["mean_real"]
    out["w1"] = float(np.abs(gd.quantiles(W1_LEVELS) - rd.quantiles(W1_LEVELS)).mean())
    out["ssim_ratio"] = out["ssim_generated"] / out["ssim_real"]
    return out


def volume_stats(volumes: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
                 sigma: float = SMOOTH_SIGMA) -> NeighbourStats:
    """(images, masks, z) per volume -> their pooled neighbour statistics."""
    stats = NeighbourStats()
    for images, masks, z in volumes:
        stats.add(images, masks, z, sigma)
    return stats
