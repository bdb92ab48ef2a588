"""Memorisation audit: is a generated slice closer to a training slice than real unseen slices are?

Synthetic medical images must not leak training patients. For every generated
slice we take the distance to its nearest training slice and divide it by the
median of the same distance for real held-out slices (images of patients the
generator never saw): about 1 means "as far from the training set as a new
patient", near 0 means "almost a copy of a training slice". Slices below
``threshold`` are flagged as possible copies. Two distances: the RMS pixel
difference inside the query's body, in [-1, 1] units (always), and the Euclidean
distance between Inception pool3 features (when the pretrained weights exist):
a copy that is shifted, or has another noise texture, is far in pixels and near
in features.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

DEFAULT_THRESHOLD = 0.5  # below half the typical unseen-patient distance: a possible copy


@dataclass(frozen=True)
class Nearest:
    distance: np.ndarray  # (N,) RMS difference to the nearest training slice, inside the query's body
    index: np.ndarray  # (N,) which training slice


# Training slices converted to float64 at a time: the set itself may be held as float16 (half of float32),
# and a chunk costs TRAIN_CHUNK x H x W x 16 bytes (it and its square): 256 MiB at 256 px on the CPU. On a GPU
# 2048 queries against 2048 slices a step (~4 GiB at 256 px): a pair costs 4 H W flops in float64 (~0.26 M at
# 256 px), and AutoPET's export audit is ~1.6e11 pairs: weeks on CPU threads, well under an hour on a data-
# centre GPU's float64 (docs/benchmarks.md).
TRAIN_CHUNK = 256


def search_chunks(device: torch.device | None) -> tuple[int, int]:
    """(queries, training slices) per step of ``nearest_training`` on ``device``."""
    return (2048, 2048) if device is not None and device.type == "cuda" else (256, TRAIN_CHUNK)


def nearest_training(queries: torch.Tensor, masks: torch.Tensor, train: torch.Tensor, chunk: int | None = None,
                     train_chunk: int | None = None, allowed: np.ndarray | None = None,
                     device: torch.device | None = None) -> Nearest:
    """For each query (N, H, W) the nearest training slice (M, H, W), scored inside the query's mask.

    sum_body (q - t)^2 = sum_body q^2 - 2 sum_body q t + sum_body t^2: three matrix
    products, never an (N, M, H, W) tensor. ``train`` may be float16: ``train_chunk``
    of its slices at a time become float64, and the running minimum keeps the first
    of equal distances, as one search over the whole set does. ``allowed`` (M,) bool:
    only those training slices are candidates (the others of the query's patient).
    ``device``: where the products run (the training set may already be there), in float64 on any
    device, so a GPU finds the same slices and distances as the CPU; ``chunk`` and ``train_chunk`` default
    to the device's ``search_chunks``.
    """
    if train.shape[0] == 0:
        raise ValueError("memorisation audit: the training set has no slices")
    if allowed is not None and not allowed.any():
        raise ValueError("memorisation audit: no training slice is a candidate (every one belongs to the "
                         "query's own patient)")
    if queries.shape[0] == 0:
        return Nearest(np.zeros(0), np.zeros(0, np.int64))
    device = device or torch.device("cpu")
    default_chunk, default_train_chunk = search_chunks(device)
    chunk, train_chunk = chunk or default_chunk, train_chunk or default_train_chunk
    flat = train.reshape(train.shape[0], -1)
    banned = None if allowed is None else torch.from_numpy(~np.asarray(allowed, bool)).to(device)
    dists, idx = [], []
    for at in range(0, queries.shape[0], chunk):
        q = queries[at:at + chunk].reshape(-1, flat.shape[1]).to(device, torch.float64)
        m = masks[at:at + chunk].reshape(-1, flat.shape[1]).to(device, torch.float64)
        n = m.sum(dim=1, keepdim=True).clamp(min=1)
        qq, mq = (m * q * q).sum(dim=1, keepdim=True), m * q
        best = torch.full((q.shape[0],), torch.inf, dtype=torch.float64, device=device)
        where = torch.zeros(q.shape[0], dtype=torch.int64, device=device)
        for t0 in range(0, flat.shape[0], train_chunk):
            t = flat[t0:t0 + train_chunk].to(device, torch.float64)
            sq = ((qq - 2 * mq @ t.T + m @ (t * t).T) / n).clamp(min=0)
            if banned is not None:
                sq[:, banned[t0:t0 + train_chunk]] = torch.inf
            _running_min(sq, t0, best, where)
        dists.append(best.sqrt().cpu())
        idx.append(where.cpu())
    return Nearest(torch.cat(dists).numpy(), torch.cat(idx).numpy())


def _running_min(sq: torch.Tensor, offset: int, best: torch.Tensor, where: torch.Tensor) -> None:
    """Fold the distances to training slices ``offset``.. into ``best`` / ``where`` (in place); a tie keeps
    the earlier slice."""
    value, index = sq.min(dim=1)
    better = value < best
    best[better] = value[better]
    where[better] = index[better] + offset


def nearest_features(queries: np.ndarray, train: np.ndarray, chunk: int = 1024,
                     train_chunk: int = 4096) -> Nearest:
    """For each query feature vector (N, D) the nearest training vector (M, D), Euclidean; ``train`` as
    stored (float32 in the statistics files), ``train_chunk`` of its vectors in float64 at a time."""
    if train.shape[0] == 0:
        raise ValueError("memorisation audit: the training set has no slices")
    if queries.shape[0] == 0:
        return Nearest(np.zeros(0), np.zeros(0, np.int64))
    dists, idx = [], []
    for at in range(0, queries.shape[0], chunk):
        q = torch.from_numpy(np.asarray(queries[at:at + chunk], np.float64))
        qq = (q * q).sum(dim=1, keepdim=True)
        best = torch.full((q.shape[0],), torch.inf, dtype=torch.float64)
        where = torch.zeros(q.shape[0], dtype=torch.int64)
        for t0 in range(0, train.shape[0], train_chunk):
            t = torch.from_numpy(np.asarray(train[t0:t0 + train_chunk], np.float64))
            _running_min((qq - 2 * q @ t.T + (t * t).sum(dim=1)[None]).clamp(min=0), t0, best, where)
        dists.append(best.sqrt())
        idx.append(where)
    return Nearest(torch.cat(dists).numpy(), torch.cat(idx).numpy())


@dataclass(frozen=True)
class Audit:
    summary: dict
    nearest: Nearest  # of each generated slice
    ratio: np.ndarray  # (N,) its distance / the real slices' median distance
    flagged: np.ndarray  # (N,) ratio below the threshold: a possible copy


def audit(generated: torch.Tensor, generated_masks: torch.Tensor, real: torch.Tensor, real_masks: torch.Tensor,
          train: torch.Tensor, threshold: float = DEFAULT_THRESHOLD) -> Audit:
    """Each generated slice's nearest training slice in pixels, its distance ratio and flag, and their summary."""
    return compare(nearest_training(generated, generated_masks, train), nearest_training(real, real_masks, train),
                   threshold)


def audit_features(generated: np.ndarray, real: np.ndarray, train: np.ndarray,
                   threshold: float = DEFAULT_THRESHOLD) -> Audit:
    """The same audit on feature vectors (N, D) of generated, real held-out and training slices."""
    # Features have no fixed unit: "distance 0" is relative to their typical length.
    norms = np.concatenate([np.linalg.norm(np.asarray(train[i:i + 4096], np.float64), axis=1)
                            for i in range(0, len(train), 4096)])
    floor = 1e-6 * float(np.median(norms))
    return compare(nearest_features(generated, train), nearest_features(real, train), threshold, floor)


def held_out_scale(distances: np.ndarray, floor: float = 1e-6) -> float:
    """The audit's unit: the real held-out slices' median nearest-training distance (NaN without one). At or
    below ``floor`` most held-out slices are training slices: a test study is in training under another id
    (a copy, a crop), which no audit can measure against, so it is refused."""
    if not distances.size:
        return float("nan")
    scale = float(np.median(distances))
    if not scale > floor:  # the expanded square leaves rounding noise where slices are identical
        raise ValueError("memorisation audit: real held-out slices have distance 0 to the training set; are test "
                         "slices among the training slices? A test study listed again under another case or patient "
                         "id (a copy, a crop) is in training: list each study once (cases.tsv) and rerun the split")
    return scale


def compare(gen: Nearest, ref: Nearest, threshold: float, floor: float = 1e-6) -> Audit:
    """Generated slices' nearest-training distances against the real held-out slices' median;
    a median at or below ``floor`` means the held-out slices are training slices. Without generated or real
    held-out slices the summary is NaN and its ``note`` says why."""
    if not gen.distance.size or not ref.distance.size:
        missing = "generated test slice" if not gen.distance.size else "real test slice to scale the distance"
        nan = float("nan")
        summary = {"real_median_distance": nan, "generated_median_distance": nan, "ratio_p05": nan,
                   "ratio_median": nan, "ratio_min": nan, "threshold": threshold, "flagged": 0,
                   "slices": int(gen.distance.size), "real_ratio_min": nan, "note": f"not computed: no {missing}"}
        return Audit(summary, gen, np.full(gen.distance.size, nan), np.zeros(gen.distance.size, bool))
    scale = held_out_scale(ref.distance, floor)
    ratio = gen.distance / scale
    flagged = ratio < threshold
    summary = {
        "real_median_distance": scale,
        "generated_median_distance": float(np.median(gen.distance)),
        "ratio_p05": float(np.percentile(ratio, 5)), "ratio_median": float(np.median(ratio)),
        "ratio_min": float(ratio.min()), "threshold": threshold,
        "flagged": int(flagged.sum()), "slices": int(ratio.size),
        "real_ratio_min": float(ref.distance.min() / scale),
    }
    return Audit(summary, gen, ratio, flagged)
