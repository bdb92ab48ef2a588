"""Neighbouring-slice context (2.5D): the label maps of the k slices below and above each slice.

A slice's neighbour at offset d (d = -k..-1, 1..k, along the volume's z axis,
inferior to superior on the canonical grid) is the slice of the same case at
z + d. Where that slice is not in the set (beyond the volume's first or last
sliced slice, or a slice the slicing rule dropped) the neighbour at d - sign(d)
stands in: the volume's edge repeats its last slice, as a replicate padding
does. Training, validation and generation all use this one rule, so a
generator sees at generation time the context it learned with.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

MAX_CONTEXT = 4  # slices each side; beyond this the label channels outgrow the benefit


def context_offsets(k: int) -> list[int]:
    """The z offsets of the context channels, in channel order: -k..-1, then 1..k."""
    if not 0 <= k <= MAX_CONTEXT:
        raise ValueError(f"train.context_slices must be 0..{MAX_CONTEXT}, got {k}")
    return [*range(-k, 0), *range(1, k + 1)]


def neighbour_index(case_ids: Sequence[str], z: Sequence[int], k: int) -> np.ndarray:
    """(N, 2k) row indices of each slice's neighbours in the set (edges repeat, see the module)."""
    offsets = context_offsets(k)
    where = {(c, int(zz)): i for i, (c, zz) in enumerate(zip(case_ids, z))}
    if len(where) != len(case_ids):
        raise ValueError("two slices share one case id and z; the slice set is not one slice per position")
    out = np.empty((len(case_ids), len(offsets)), dtype=np.int64)
    for i, (c, zz) in enumerate(zip(case_ids, z)):
        for j, d in enumerate(offsets):
            step = 1 if d > 0 else -1
            found = i
            for dd in range(step, d + step, step):  # walk outwards; stop at the first missing slice
                nxt = where.get((c, int(zz) + dd))
                if nxt is None:
                    break
                found = nxt
            out[i, j] = found
    return out


def fill_context(out: np.ndarray, labels: np.ndarray, case_ids: Sequence[str], z: Sequence[int], k: int,
                 chunk: int = 512) -> np.ndarray:
    """Write each slice's neighbours' label maps into ``out`` (N, 2k, H, W), ``chunk`` slices at a time,
    so that a memory-mapped ``labels`` or ``out`` never comes into RAM whole; returns ``out``."""
    near = neighbour_index(case_ids, z, k)
    for i in range(0, len(near), chunk):
        out[i : i + chunk] = labels[near[i : i + chunk]]
    return out


def context_labels(labels: np.ndarray, case_ids: Sequence[str], z: Sequence[int], k: int) -> np.ndarray:
    """(N, H, W) label maps -> (N, 2k, H, W): each slice's neighbours' maps, in ``context_offsets`` order."""
    labels = np.asarray(labels)
    out = np.empty((labels.shape[0], len(context_offsets(k)), *labels.shape[1:]), dtype=labels.dtype)
    return fill_context(out, labels, case_ids, z, k)
