"""A sample of non-negative float32 values too large to hold: its mean and numpy's quantiles, exactly.

Through-plane consistency compares the distributions of every in-body
difference between neighbouring slices (one float per body pixel of every
slice of a test set: as large as the test set itself). ``SpilledSample``
holds values in memory up to a budget and appends the rest to a temporary
file (in ``$TMPDIR``, which Snakemake points at the job's ``tmpdir``). Held,
it answers with numpy on the joined values, as before. Spilled, quantiles
are found by their bit patterns (a non-negative float32 sorts as its
uint32 pattern): three passes of 11, 11 and 10 bits, each a histogram per
value sought, fix every bit of each order statistic; numpy's linear
interpolation between them follows. The result is ``np.quantile`` of the
joined values, exactly; the mean is a float64 sum (numpy's float32 mean
differs from it in the last digits).
"""

from __future__ import annotations

import tempfile
from typing import Iterator

import numpy as np

# Bytes of values held before the sample spills to disk (4 M differences): what evaluate's memory may grow by
# with the test set, twice (the joined values and np.quantile's copy). A 16x demo test set spills.
MEMORY_BUDGET = 16 * 2**20
CHUNK = 2**20  # values read back at a time: 4 MiB as float32; a pass holds ~10 arrays of that length
RADIX_BITS = (11, 11, 10)  # the 32 bits of a float32, most significant first


class SpilledSample:
    """Non-negative float32 values added in chunks; ``mean`` and ``quantiles`` of all of them."""

    def __init__(self, budget_bytes: int = MEMORY_BUDGET) -> None:
        self.budget = budget_bytes
        self.held: list[np.ndarray] = []
        self.held_bytes = 0
        self.file = None  # the temporary file once spilled
        self.count = 0
        self.total = 0.0  # float64 sum of the spilled values' sample

    def __len__(self) -> int:
        return self.count

    def add(self, values: np.ndarray) -> None:
        values = np.ascontiguousarray(values, np.float32).ravel()
        if values.size and not values.min() >= 0:
            raise ValueError("SpilledSample holds non-negative numbers only (their bit patterns sort as they do)")
        self.count += values.size
        self.total += float(values.sum(dtype=np.float64))
        if self.file is None and self.held_bytes + values.nbytes <= self.budget:
            self.held.append(values)
            self.held_bytes += values.nbytes
            return
        if self.file is None:
            self.file = tempfile.TemporaryFile(prefix="medsynth-sample-")
            for part in self.held:
                part.tofile(self.file)
            self.held, self.held_bytes = [], 0
        values.tofile(self.file)

    def mean(self) -> float:
        if self.file is None:
            return float(self._joined().mean()) if self.count else float("nan")
        return self.total / self.count

    def _joined(self) -> np.ndarray:
        """The held values as one array, kept in their place (joined once, not once per question)."""
        if len(self.held) != 1:
            self.held = [np.concatenate(self.held) if self.held else np.zeros(0, np.float32)]
        return self.held[0]

    def quantiles(self, levels: np.ndarray) -> np.ndarray:
        """``np.quantile`` (linear) of every value added, at ``levels`` in [0, 1]."""
        levels = np.asarray(levels, np.float64)
        if self.file is None:
            return np.quantile(self._joined(), levels)
        virtual = (self.count - 1) * levels  # numpy's linear method (Hyndman & Fan 7)
        previous = np.clip(np.floor(virtual), 0, self.count - 1).astype(np.int64)
        following = np.clip(previous + 1, 0, self.count - 1)
        ranks = np.unique(np.concatenate([previous, following]))
        values = dict(zip(ranks.tolist(), order_statistics(self._chunks, ranks)))
        a = np.array([values[r] for r in previous.tolist()], np.float32)
        b = np.array([values[r] for r in following.tolist()], np.float32)
        return _lerp(a, b, virtual - previous)

    def _chunks(self) -> Iterator[np.ndarray]:
        self.file.flush()
        self.file.seek(0)
        while True:
            chunk = np.fromfile(self.file, np.float32, CHUNK)
            if chunk.size == 0:
                return
            yield chunk


def _lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """numpy's quantile interpolation, term for term (so the numbers are the same to the last bit): the
    difference in the values' float32, the rest in float64."""
    diff = b - a
    out = a + diff * t
    return np.where(t >= 0.5, b - diff * (1 - t), out)


def order_statistics(chunks, ranks: np.ndarray) -> np.ndarray:
    """The values (float32) at 0-based ``ranks`` of the sorted sample of non-negative float32 values that
    ``chunks()`` reads (once per pass), by radix selection on their bit patterns: per pass, for every value
    sought, a histogram of the next bits among the values that share the bits found so far."""
    prefix = np.zeros(len(ranks), np.uint64)  # the bits found so far, per rank
    rest = np.asarray(ranks, np.int64).copy()  # its rank among the values sharing that prefix
    known = 0
    for bits in RADIX_BITS:
        shift = 32 - known - bits
        groups, group_of = np.unique(prefix, return_inverse=True)
        counts = np.zeros(len(groups) << bits, np.int64)
        for chunk in chunks():
            u = chunk.view(np.uint32).astype(np.uint64)
            top = u >> np.uint64(32 - known)  # the bits already known (none: 0 for every value)
            g = np.minimum(np.searchsorted(groups, top), len(groups) - 1)
            hit = groups[g] == top
            digit = (u[hit] >> np.uint64(shift)) & np.uint64((1 << bits) - 1)
            counts += np.bincount((g[hit].astype(np.int64) << bits) + digit.astype(np.int64),
                                  minlength=counts.size)
        cumulative = counts.reshape(len(groups), 1 << bits).cumsum(axis=1)
        for i, g in enumerate(group_of.ravel()):
            d = int(np.searchsorted(cumulative[g], rest[i], side="right"))
            rest[i] -= cumulative[g, d - 1] if d else 0
            prefix[i] = (prefix[i] << np.uint64(bits)) | np.uint64(d)
        known += bits
    return prefix.astype(np.uint32).view(np.float32)
