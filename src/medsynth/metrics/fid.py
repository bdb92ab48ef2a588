"""FID: the Frechet distance between Gaussians fitted to Inception features of generated and real images.

With several samples per label map the generated set is scored a draw at a time (``fid_over_draws``):
sample k of every label map against the real set, the K distances averaged. FID's bias falls with the
number of images, so scoring all K*N samples at once read a perfect generator above 0 (its K copies of each
real image have a covariance K(N-1)/(KN-1) times the real one) and made a config with more samples per
label map look better than the same generator with fewer.
"""

from __future__ import annotations

from typing import Hashable, Sequence

import numpy as np

FEATURES = 2048  # Inception's pool3 features: FID's covariances are FEATURES x FEATURES


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance; NaN for fewer than two feature vectors (``frechet_distance`` then gives NaN)."""
    d = features.shape[1]
    if len(features) < 2:
        return np.full(d, np.nan), np.full((d, d), np.nan)
    return features.mean(axis=0), np.cov(features, rowvar=False)


def few_for_fid(generated: int, real: int, what: str) -> str:
    """The warning FID's row carries when a side holds fewer images (``what``: slices, planes) than
    Inception's features: the covariances are then singular and FID is biased upward; "" otherwise."""
    if min(generated, real) >= FEATURES:
        return ""
    return f"fewer {what} than Inception's {FEATURES} features: FID reads high, compare KID (unbiased)"


def psd_root(sigma: np.ndarray) -> np.ndarray:
    """The symmetric square root of a covariance (round-off below 0 clipped): ``frechet_distance``'s
    ``root2``, computed once for a real side scored against several generated sets."""
    w, v = np.linalg.eigh(sigma)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     root2: np.ndarray | None = None) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)).

    Tr((S1 S2)^(1/2)) is the sum of the square roots of the eigenvalues of
    S1 S2, which are those of the symmetric S2^(1/2) S1 S2^(1/2): two
    symmetric eigendecompositions instead of a general matrix square root
    (3.6 s instead of 18 s on one core at 2048 dimensions, the same value to
    1e-7), and singular covariances (fewer images than features) need no
    ridge: round-off below 0 is clipped, never complex, and so is a distance
    below 0 (identical statistics read -1e-7 of their trace). ``root2``:
    ``psd_root(sigma2)`` when already known (the real side of several draws),
    which halves the cost.
    """
    if not all(np.isfinite(x).all() for x in (mu1, sigma1, mu2, sigma2)):
        return float("nan")  # fewer than two images (no covariance), or non-finite features: NA, not an error
    diff = mu1 - mu2
    root = psd_root(sigma2) if root2 is None else root2
    inner = np.linalg.eigvalsh(root @ sigma1 @ root)
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.sqrt(np.clip(inner, 0, None)).sum()
    return max(0.0, float(value)) if np.isfinite(value) else float("nan")  # max(0.0, nan) would read 0


def sample_draws(blocks: Sequence[tuple[Hashable, int]]) -> np.ndarray:
    """Each feature row's draw: ``blocks`` lists (source, rows) in the rows' order, one block per sample of
    a label map (its source: what names the label map's real slices); a block is draw k when k blocks of
    the same source came before it."""
    seen: dict[Hashable, int] = {}
    draws = []
    for key, n in blocks:
        draws.append(np.full(n, seen.get(key, 0), np.int64))
        seen[key] = seen.get(key, 0) + 1
    return np.concatenate(draws) if draws else np.zeros(0, np.int64)


def fid_over_draws(features: np.ndarray, draws: np.ndarray | None, mu: np.ndarray,
                   sigma: np.ndarray) -> dict[str, float]:
    """FID of each draw's rows (``sample_draws``; None: one draw) against the real (``mu``, ``sigma``):
    ``fid`` their mean, ``fid_std`` their spread (NaN for one draw), ``fid_draws`` how many, ``fid_rows``
    the fewest rows of one. A draw of fewer than two rows reads NaN, as ``frechet_distance``."""
    if draws is None:
        draws = np.zeros(len(features), np.int64)
    if len(draws) != len(features):
        raise ValueError(f"{len(draws)} draws for {len(features)} generated feature vectors")
    values, rows, each = [], [], np.unique(draws)
    # The real side's root, once for every draw (one draw: frechet_distance takes it itself).
    root = psd_root(sigma) if len(each) > 1 and np.isfinite(sigma).all() else None
    for d in each:
        pick = features[draws == d]
        values.append(frechet_distance(*gaussian_stats(pick), mu, sigma, root))
        rows.append(len(pick))
    return {"fid": float(np.mean(values)) if values else float("nan"),
            "fid_std": float(np.std(values, ddof=1)) if len(values) > 1 else float("nan"),
            "fid_draws": len(values), "fid_rows": min(rows, default=0)}


def fid_note(scores: dict, real: int, what: str) -> str:
    """The note of a FID row (``fid_over_draws``' ``scores``) against ``real`` images (``what``: slices,
    planes): how it was averaged over the samples of each label map, and whether it reads high."""
    draws = int(scores.get("fid_draws", 1))
    over = (f"mean of {draws} FIDs, one per sample of each label map ({int(scores['fid_rows'])} {what} or more "
            "each), std their spread" if draws > 1 else "")
    return "; ".join(filter(None, (over, few_for_fid(int(scores.get("fid_rows", real)), real, what))))
