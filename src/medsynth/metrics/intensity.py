"""Per-class intensity of generated vs real images: does each organ get its own HU?

A segmenter trained on synthetic CT fails when organ intensities drift (MAISI
checks each organ's HU against the real range for that reason). For every
class: mean, standard deviation and the 5, 25, 50, 75 and 95 % percentiles of
the pixels the label map gives that class, in generated and in real images, in
physical units (HU for CT) when the caller converts them first. The percentiles
are those a box plot is drawn from (box 25-75 %, median, whiskers 5-95 %).

``compare`` turns the two sides into one row per class: the absolute error of
the mean, the ratio of standard deviations (texture: 1 is right, below 1 too
smooth) and a flag when the generated median lies outside the real 5-95 % range
(the median, not the mean: a skewed class, a bladder with 4 % excreted contrast,
has its real mean outside its own 5-95 % range, which flagged a perfect
generator). A perfect generator (fake = real, same labels) scores error 0,
ratio 1, no flag.

``ClassIntensityCounts`` gathers the same statistics over a whole test set
without holding it: it counts how often each float16 value occurs per class.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:
    from medsynth.data.intensity import IntensityMap

PERCENTILES = (5.0, 25.0, 50.0, 75.0, 95.0)
QUANTILE_KEYS = ["p05", "p25", "p50", "p75", "p95"]
STAT_COLUMNS = ["n", "mean", "std", *QUANTILE_KEYS]
COLUMNS = ["class", "voxels_real", "voxels_generated", "mean_real", "mean_generated", "mean_abs_error",
           "std_real", "std_generated", "std_ratio", *(f"{q}_real" for q in QUANTILE_KEYS),
           *(f"{q}_generated" for q in QUANTILE_KEYS), "outside_real_range"]


def weighted_stats(values: np.ndarray, counts: np.ndarray) -> dict:
    """``STAT_COLUMNS`` of a sample given as distinct ascending ``values`` and how often each occurs.

    The percentiles are numpy's default (linear interpolation between order
    statistics), so they equal ``np.percentile`` of the sample written out.
    """
    values, counts = np.asarray(values, np.float64), np.asarray(counts, np.int64)
    n = int(counts.sum())
    if n == 0:
        return {"n": 0, **{k: math.nan for k in STAT_COLUMNS[1:]}}
    mean = float((values * counts).sum() / n)
    std = float(math.sqrt((counts * (values - mean) ** 2).sum() / n))
    ends = np.cumsum(counts)  # the sorted sample's positions 0..ends[i]-1 hold values[i]
    out = {"n": n, "mean": mean, "std": std}
    for key, q in zip(QUANTILE_KEYS, PERCENTILES):
        h = (n - 1) * q / 100.0
        lo = math.floor(h)
        below, above = values[np.searchsorted(ends, [lo, min(lo + 1, n - 1)], side="right")]
        out[key] = float(below + (h - lo) * (above - below))
    return out


def class_stats(images: np.ndarray, labels: np.ndarray, num_classes: int) -> list[dict]:
    """One dict of ``STAT_COLUMNS`` per class id 0..num_classes-1, of ``images`` where ``labels`` == class.

    ``images`` and ``labels`` have the same shape (any number of slices); a
    class with no pixel gets n = 0 and NaN statistics.
    """
    images, labels = np.asarray(images), np.asarray(labels)
    if images.shape != labels.shape:
        raise ValueError(f"images {images.shape} and labels {labels.shape} must have the same shape")
    flat, lab = images.reshape(-1).astype(np.float64), labels.reshape(-1).astype(np.int64)
    order = np.argsort(lab, kind="stable")
    bounds = np.searchsorted(lab[order], np.arange(num_classes + 1))
    return [weighted_stats(*np.unique(flat[order[bounds[c]:bounds[c + 1]]], return_counts=True))
            for c in range(num_classes)]


class ClassIntensityCounts:
    """Per class, how often each intensity occurs, summed over any number of images.

    Counts are kept per float16 value, the type the pipeline stores images in
    (``slices.npz``, ``samples.npz``): exact for those, and C x 65536 counters
    however large the test set (``class_stats`` of the whole set would hold a
    float64 copy and a sort index of every pixel). Each ``add`` may bring its
    own ``curve`` into physical units (a
    case's intensity curve), applied to the 65536 values when the statistics
    are taken; equal curves share one set of counters.
    """

    CODES = 1 << 16

    def __init__(self, num_classes: int):
        self.num_classes = int(num_classes)
        self._counts: dict[IntensityMap | None, np.ndarray] = {}

    def add(self, images: np.ndarray, labels: np.ndarray, curve: IntensityMap | None = None,
            source: str = "") -> None:
        """Count ``images`` (stored units, e.g. [-1, 1]) by the classes ``labels`` gives them."""
        images, labels = np.asarray(images), np.asarray(labels)
        if images.shape != labels.shape:
            raise ValueError(f"{source}: images {images.shape} and labels {labels.shape} must have the same shape")
        lab = labels.reshape(-1).astype(np.int64)
        if lab.size and (lab.min() < 0 or lab.max() >= self.num_classes):
            raise ValueError(f"{source}: class ids {lab.min()}..{lab.max()} outside the label table's "
                             f"0..{self.num_classes - 1}; the label maps must use the experiment's label table")
        codes = images.astype(np.float16).reshape(-1).view(np.uint16).astype(np.int64)
        counts = np.bincount(lab * self.CODES + codes, minlength=self.num_classes * self.CODES)
        counts = counts.reshape(self.num_classes, self.CODES)
        if curve in self._counts:
            self._counts[curve] += counts
        else:
            self._counts[curve] = counts

    def stats(self) -> list[dict]:
        """``class_stats`` of everything added, each part in the physical units of its curve."""
        stored = np.arange(self.CODES, dtype=np.uint16).view(np.float16).astype(np.float64)
        finite = np.isfinite(stored)  # a curve is defined on numbers; a NaN pixel makes its class NaN
        converted = {}
        for curve in self._counts:
            converted[curve] = stored.copy()
            if curve is not None:
                converted[curve][finite] = curve.to_physical(stored[finite])
        out = []
        for c in range(self.num_classes):
            values = np.concatenate([converted[k][n[c] > 0] for k, n in self._counts.items()] or [np.zeros(0)])
            counts = np.concatenate([n[c][n[c] > 0] for n in self._counts.values()] or [np.zeros(0, np.int64)])
            # Distinct stored values can meet in one physical value (+0 and -0, two curves).
            distinct, where = np.unique(values, return_inverse=True)
            out.append(weighted_stats(distinct, np.bincount(where, weights=counts).astype(np.int64)))
        return out


def compare(generated: Sequence[dict], real: Sequence[dict], class_names: Sequence[str]) -> list[dict]:
    """Rows of ``COLUMNS``: generated vs real statistics per class (``class_stats`` of each side)."""
    if not (len(generated) == len(real) == len(class_names)):
        raise ValueError(f"{len(generated)} generated, {len(real)} real statistics for {len(class_names)} classes")
    rows = []
    for name, g, r in zip(class_names, generated, real):
        both = g["n"] > 0 and r["n"] > 0
        ratio = g["std"] / r["std"] if both and r["std"] > 0 else math.nan
        rows.append({
            "class": name, "voxels_real": r["n"], "voxels_generated": g["n"],
            "mean_real": r["mean"], "mean_generated": g["mean"],
            "mean_abs_error": abs(g["mean"] - r["mean"]) if both else math.nan,
            "std_real": r["std"], "std_generated": g["std"], "std_ratio": ratio,
            **{f"{q}_real": r[q] for q in QUANTILE_KEYS}, **{f"{q}_generated": g[q] for q in QUANTILE_KEYS},
            # A class with no real spread (CT air, clipped to the window's end) has no range to
            # fall outside of: a few HU of generated noise there is not a wrong organ intensity.
            "outside_real_range": bool(both and r["p95"] > r["p05"] and not (r["p05"] <= g["p50"] <= r["p95"])),
        })
    return rows


def class_intensity_table(fake: np.ndarray, fake_labels: np.ndarray, real: np.ndarray, real_labels: np.ndarray,
                          class_names: Sequence[str]) -> list[dict]:
    """``compare`` of generated images (in the label maps they came from) with real ones (in their own labels)."""
    n = len(class_names)
    return compare(class_stats(fake, fake_labels, n), class_stats(real, real_labels, n), class_names)


def flagged(rows: Sequence[dict]) -> list[str]:
    """Names of the classes whose generated median lies outside the real 5-95 % range."""
    return [r["class"] for r in rows if r["outside_real_range"]]
