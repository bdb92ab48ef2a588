"""Sets read a case at a time: the slice files' arrays as stored (``slice_chunks``) and
a model that takes fixed-size batches fed from them (``Rebatch``).

Evaluation, the audits and the utility benchmark read their slices case by
case, so that memory does not grow with the test or training set. A network
run case by case would see other batches than one run over the joined set
(the last batch of every case short), and a convolution's rounding may
depend on the batch; ``Rebatch`` hands the rows on in exactly the batches a
loop over the joined set makes, so results are those of the joined set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from medsynth.io.heap import release_freed


class Rebatch:
    """Rows pushed in chunks of any length reach ``fn`` in batches of exactly ``size`` rows (the last may
    be smaller): ``fn(*columns)`` for aligned columns (e.g. generated and real images). ``close`` runs the
    rest and returns ``fn``'s results in order (None results are not kept)."""

    def __init__(self, fn: Callable[..., Any], size: int) -> None:
        if size < 1:
            raise ValueError(f"batch size must be >= 1, got {size}")
        self.fn, self.size = fn, int(size)
        self.pending: list[tuple[torch.Tensor, ...]] = []
        self.rows = 0
        self.results: list[Any] = []

    def push(self, *columns: torch.Tensor) -> None:
        if len({len(c) for c in columns}) != 1:
            raise ValueError(f"columns of different lengths {[len(c) for c in columns]}")
        self.pending.append(columns)
        self.rows += len(columns[0])
        while self.rows >= self.size:
            self._run(self.size)

    def close(self) -> list[Any]:
        if self.rows:
            self._run(self.rows)
        return self.results

    def _run(self, n: int) -> None:
        """Take the first ``n`` pending rows (splitting a chunk where the batch ends) and run ``fn`` on them."""
        parts, taken = [], 0
        while taken < n:
            chunk = self.pending[0]
            take = min(n - taken, len(chunk[0]))
            parts.append(tuple(c[:take] for c in chunk))
            if take == len(chunk[0]):
                self.pending.pop(0)
            else:
                self.pending[0] = tuple(c[take:] for c in chunk)
            taken += take
        self.rows -= n
        batch = parts[0] if len(parts) == 1 else tuple(torch.cat(cols) for cols in zip(*parts))
        result = self.fn(*batch)
        if result is not None:
            self.results.append(result)


def case_order(files: Sequence[str | Path]) -> list[Path]:
    """``slices.npz`` files in the order of their case ids (their folders' names): ``slice_chunks``' order."""
    return [path for _, path in sorted((Path(f).parent.name, Path(f)) for f in files)]


def slice_chunks(files: Sequence[str | Path], keys: Sequence[str] = ("images", "masks")
                 ) -> Iterator[tuple[torch.Tensor, ...]]:
    """The arrays ``keys`` of each ``slices.npz`` as stored (images float16), a case at a time, in the order of
    their case ids (``load_slices``' order, which the Inception statistics follow)."""
    for path in case_order(files):
        release_freed()  # the previous case's memory goes back first (io.heap)
        with np.load(path) as f:
            yield tuple(torch.from_numpy(f[k]) for k in keys)
