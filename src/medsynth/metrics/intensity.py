"""Per-class intensity of generated vs real images: does each organ get its own HU?

A segmenter trained on synthetic CT fails when organ intensities drift (MAISI
checks each organ's HU against the real range for that reason). For every
class: mean, standard deviation and the 5-95 % percentile range of the pixels
the label map gives that class, in generated and in real images, in physical
units (HU for CT) when the caller converts them first.

``compare`` turns the two sides into one row per class: the absolute error of
the mean, the ratio of standard deviations (texture: 1 is right, below 1 too
smooth) and a flag when the generated mean lies outside the real 5-95 % range.
A perfect generator (fake = real, same labels) scores error 0, ratio 1, no flag.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

PERCENTILES = (5.0, 95.0)
STAT_COLUMNS = ["n", "mean", "std", "p05", "p95"]
COLUMNS = ["class", "voxels_real", "voxels_generated", "mean_real", "mean_generated", "mean_abs_error",
           "std_real", "std_generated", "std_ratio", "p05_real", "p95_real", "p05_generated", "p95_generated",
           "outside_real_range"]


def class_stats(images: np.ndarray, labels: np.ndarray, num_classes: int) -> list[dict]:
    """One dict per class id 0..num_classes-1: n, mean, std, p05, p95 of ``images`` where ``labels`` == class.

    ``images`` and ``labels`` have the same shape (any number of slices); a
    class with no pixel gets n = 0 and NaN statistics.
    """
    images, labels = np.asarray(images), np.asarray(labels)
    if images.shape != labels.shape:
        raise ValueError(f"images {images.shape} and labels {labels.shape} must have the same shape")
    flat, lab = images.reshape(-1).astype(np.float64), labels.reshape(-1).astype(np.int64)
    order = np.argsort(lab, kind="stable")
    bounds = np.searchsorted(lab[order], np.arange(num_classes + 1))
    out = []
    for c in range(num_classes):
        values = flat[order[bounds[c]:bounds[c + 1]]]
        if values.size == 0:
            out.append({"n": 0, "mean": math.nan, "std": math.nan, "p05": math.nan, "p95": math.nan})
            continue
        p05, p95 = np.percentile(values, PERCENTILES)
        out.append({"n": int(values.size), "mean": float(values.mean()), "std": float(values.std()),
                    "p05": float(p05), "p95": float(p95)})
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
            "p05_real": r["p05"], "p95_real": r["p95"], "p05_generated": g["p05"], "p95_generated": g["p95"],
            "outside_real_range": bool(both and not (r["p05"] <= g["mean"] <= r["p95"])),
        })
    return rows


def class_intensity_table(fake: np.ndarray, fake_labels: np.ndarray, real: np.ndarray, real_labels: np.ndarray,
                          class_names: Sequence[str]) -> list[dict]:
    """``compare`` of generated images (in the label maps they came from) with real ones (in their own labels)."""
    n = len(class_names)
    return compare(class_stats(fake, fake_labels, n), class_stats(real, real_labels, n), class_names)


def flagged(rows: Sequence[dict]) -> list[str]:
    """Names of the classes whose generated mean lies outside the real 5-95 % range."""
    return [r["class"] for r in rows if r["outside_real_range"]]
