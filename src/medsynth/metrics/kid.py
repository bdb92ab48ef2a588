"""KID: the kernel (cubic polynomial) MMD^2 between Inception features of generated and real images, over
random subsets; the generated rows paired with the real rows whose label maps made them, where they were."""

from __future__ import annotations

from typing import Hashable, Sequence

import numpy as np


def kernel_inception_distance(a: np.ndarray, b: np.ndarray, subsets: int = 100, subset_size: int = 1000,
                              seed: int = 0, partner: np.ndarray | None = None) -> tuple[float, float]:
    """MMD^2 with the cubic polynomial kernel over random subsets of ``m`` rows each: (mean, std).

    Unpaired (``partner`` None: ``a`` and ``b`` independent), each subset draws ``m`` rows of ``a`` and ``m``
    of ``b`` and takes the unbiased estimator of Binkowski et al. (2018). Paired (``partner[i]``: the row of
    ``b`` whose label map ``a[i]`` was generated from), a draw takes ``m`` rows of ``b`` and, for each, one of
    the rows of ``a`` generated from it, and averages h(z_i, z_j) = k(x_i, x_j) + k(y_i, y_j) - k(x_i, y_j)
    - k(x_j, y_i) over the pairs i != j (MMD^2_u, Gretton et al. 2012): sample i shares its label map with
    real image i, so k(x_i, y_i) would weigh a dependent pair as an independent one (a perfect generator
    read -10 % of a patient swap); without it, the estimate stays unbiased and is 0 when ``a`` equals ``b``.
    Either way unbiased, so small test sets compare fairly, and it can read below 0.
    """
    rng = np.random.default_rng(seed)
    if partner is not None:
        return _paired_kid(a, b, np.asarray(partner), subsets, subset_size, rng)
    m = min(subset_size, len(a), len(b))
    if m < 2:
        return float("nan"), float("nan")
    values = []
    for _ in range(subsets):
        x = a[rng.choice(len(a), m, replace=False)]
        y = b[rng.choice(len(b), m, replace=False)]
        kxx, kyy, kxy = _cubic(x, x), _cubic(y, y), _cubic(x, y)
        values.append((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                      - 2 * kxy.mean())
    return float(np.mean(values)), float(np.std(values))


def _cubic(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """KID's kernel k(x, y) = (x.y / d + 1)^3 between every row of ``x`` and every row of ``y``."""
    return (x @ y.T / x.shape[1] + 1) ** 3


def _paired_kid(a: np.ndarray, b: np.ndarray, partner: np.ndarray, subsets: int, subset_size: int,
                rng: np.random.Generator) -> tuple[float, float]:
    """``kernel_inception_distance`` of pairs (a[i], b[partner[i]]): one generated row per real row a draw."""
    if partner.shape != (len(a),) or (partner.size and not 0 <= partner.min() <= partner.max() < len(b)):
        raise ValueError(f"partner must give a row of the {len(b)} real feature vectors for each of the {len(a)} "
                         f"generated ones, got shape {partner.shape}")
    order = np.argsort(partner, kind="stable")  # the generated rows grouped by the real row they came from
    reals, first, count = np.unique(partner[order], return_index=True, return_counts=True)
    m = min(subset_size, len(reals))
    if m < 2:
        return float("nan"), float("nan")
    values = []
    for _ in range(subsets):
        pick = rng.choice(len(reals), m, replace=False)
        x, y = a[order[first[pick] + rng.integers(count[pick])]], b[reals[pick]]
        kxx, kyy, kxy = _cubic(x, x), _cubic(y, y), _cubic(x, y)
        off = kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy) - 2 * (kxy.sum() - np.trace(kxy))
        values.append(off / (m * (m - 1)))
    return float(np.mean(values)), float(np.std(values))


def partners(generated: Sequence[tuple[Hashable, int]], real: Sequence[tuple[Hashable, int]]) -> np.ndarray | None:
    """KID's ``partner`` from blocks of rows: ``generated`` and ``real`` list (source, rows) in the order of
    their feature rows, the source naming the real slices a block was generated from (generated) or is
    (real). None, the sets then taken as independent, unless every generated block has a real block of
    the same source and as many rows."""
    start, at = {}, 0
    for key, n in real:
        start[key], at = (at, n), at + n
    rows = []
    for key, n in generated:
        if key not in start or start[key][1] != n:
            return None
        rows.append(start[key][0] + np.arange(n))
    return np.concatenate(rows) if rows else np.zeros(0, np.int64)
