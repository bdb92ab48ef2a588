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

SMOOTH_SIGMA = 2.0  # pixels (12 mm in the demo): takes out voxel noise, which differs between any two slices
# Bins of the differences' histogram over [0, 2] (the largest |difference| of two values in [-1, 1]): 3e-5
# wide, W1 within one bin width of the exact one, 512 KiB whatever the test set's size.
DIFFERENCE_BINS = 2**16
DIFFERENCE_RANGE = 2.0


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


class Differences:
    """The distribution of absolute differences, pooled as they are added: a histogram (``DIFFERENCE_BINS``
    over [0, ``DIFFERENCE_RANGE``], beyond it in the last bin) and an exact float64 sum. Fixed memory for any
    test set: the values themselves were ~70-140 KB per 256-px slice, 7-14 GB for AutoPET's test set."""

    def __init__(self, bins: int = DIFFERENCE_BINS) -> None:
        self.counts = np.zeros(bins, np.int64)
        self.total = 0.0
        self.nonfinite = 0  # NaN differences: mean and W1 are NA, not computed without them

    def __len__(self) -> int:
        return int(self.counts.sum())

    def add(self, values: np.ndarray) -> None:
        values = np.asarray(values, np.float32).ravel()
        finite = np.isfinite(values)
        self.nonfinite += int(values.size - np.count_nonzero(finite))
        values = np.abs(values[finite])
        self.total += float(values.sum(dtype=np.float64))
        scale = len(self.counts) / DIFFERENCE_RANGE
        index = np.minimum((values * np.float32(scale)).astype(np.int64), len(self.counts) - 1)
        self.counts += np.bincount(index, minlength=len(self.counts))

    def mean(self) -> float:
        return self.total / len(self) if len(self) and not self.nonfinite else float("nan")

    def w1(self, other: "Differences") -> float:
        """Wasserstein-1 distance to ``other``'s distribution: the area between the two CDFs, each value at
        its bin's lower edge (so within one bin width of the exact distance; 0 for the same values)."""
        if not len(self) or not len(other) or self.nonfinite or other.nonfinite:
            return float("nan")
        gap = np.cumsum(self.counts) / len(self) - np.cumsum(other.counts) / len(other)
        return float(np.abs(gap[:-1]).sum() * (DIFFERENCE_RANGE / len(self.counts)))


@dataclass
class NeighbourStats:
    """Differences between neighbouring slices, pooled over volumes: their distribution (``Differences``,
    one value per in-body pixel of every pair) and one SSIM per pair."""
    differences: Differences = field(default_factory=Differences)
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


def scores(generated: NeighbourStats, real: NeighbourStats) -> dict[str, float]:
    """``ratio``, ``w1``, ``ssim_ratio`` and the underlying means; NaN where a side has no adjacent slices,
    and a ratio NaN where the real mean it divides by is 0.
    ``w1``: between the two distributions of differences (``Differences.w1``: every difference of a test set
    counts)."""
    gd, rd = generated.differences, real.differences
    gs, rs = generated.pooled_ssim(), real.pooled_ssim()
    out = {k: float("nan") for k in ("ratio", "w1", "ssim_ratio", "mean_generated", "mean_real",
                                     "ssim_generated", "ssim_real")}
    out["pairs"] = int(gs.size)
    if len(gd) == 0 or len(rd) == 0:
        return out
    out.update(mean_generated=gd.mean(), mean_real=rd.mean(),
               ssim_generated=float(gs.mean()), ssim_real=float(rs.mean()))
    # Real neighbours that never differ inside the body (one slice repeated along z) leave no scale: NaN.
    out["ratio"] = out["mean_generated"] / out["mean_real"] if out["mean_real"] else float("nan")
    out["w1"] = gd.w1(rd)
    out["ssim_ratio"] = out["ssim_generated"] / out["ssim_real"] if out["ssim_real"] else float("nan")
    return out


def volume_stats(volumes: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
                 sigma: float = SMOOTH_SIGMA) -> NeighbourStats:
    """(images, masks, z) per volume -> their pooled neighbour statistics."""
    stats = NeighbourStats()
    for images, masks, z in volumes:
        stats.add(images, masks, z, sigma)
    return stats
