"""The mapping between a modality's intensities (HU for CT) and the networks' [-1, 1].

A monotone piecewise-linear curve through knots (physical value -> unit value),
clipped at its ends. A plain window is the curve through two knots, (lo, -1)
and (hi, 1). A CT window of +-1000 HU gives every soft-tissue organ (liver 60,
spleen 45, muscle 50 HU) about 1 % of the range, so neither the discriminator
nor a loss can see whether an organ got its own HU; ``ct_soft_window`` gives a
soft-tissue band a larger share of the range (``ct_soft_share``), lung and bone
keep theirs at a lower slope, and every HU still maps back exactly.

The curve is stored in each case's ``meta.json`` (``intensity.knots``), so the
generated volumes are written back with the same curve they were trained in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class IntensityMap:
    physical: tuple[float, ...]  # knots in physical units, strictly increasing
    unit: tuple[float, ...]  # their values in [-1, 1], strictly increasing, from -1 to 1

    def __post_init__(self) -> None:
        p, u = np.asarray(self.physical, float), np.asarray(self.unit, float)
        if p.size < 2 or p.size != u.size:
            raise ValueError(f"an intensity map needs >= 2 matching knots, got {self.physical} -> {self.unit}")
        if np.any(np.diff(p) <= 0) or np.any(np.diff(u) <= 0):
            raise ValueError(f"intensity knots must increase strictly: {self.physical} -> {self.unit}")
        if u[0] != -1.0 or u[-1] != 1.0:
            raise ValueError(f"intensity knots must map onto [-1, 1], got {self.unit}")

    @property
    def lo(self) -> float:
        return float(self.physical[0])

    @property
    def hi(self) -> float:
        return float(self.physical[-1])

    @classmethod
    def window(cls, lo: float, hi: float) -> "IntensityMap":
        if hi <= lo:
            raise ValueError(f"intensity window [{lo}, {hi}] is empty: the upper end must exceed the lower")
        return cls((float(lo), float(hi)), (-1.0, 1.0))

    @classmethod
    def ct(cls, window: Sequence[float], soft_window: Sequence[float] | None = None,
           soft_share: float = 0.6) -> "IntensityMap":
        """CT: ``window`` onto [-1, 1]; ``soft_window`` (inside it) onto the middle ``soft_share`` of that range."""
        lo, hi = float(window[0]), float(window[1])
        if soft_window is None:
            return cls.window(lo, hi)
        a, b = float(soft_window[0]), float(soft_window[1])
        if not lo < a < b < hi:
            raise ValueError(f"ct_soft_window {list(soft_window)} must lie strictly inside ct_window {list(window)}")
        if not 0.0 < soft_share < 1.0:
            raise ValueError(f"ct_soft_share must be between 0 and 1, got {soft_share}")
        # The rest of the range goes to the two outer parts in proportion to their HU spans (one slope).
        ua = -1.0 + 2.0 * (1.0 - soft_share) * (a - lo) / ((a - lo) + (hi - b))
        return cls((lo, a, b, hi), (-1.0, ua, ua + 2.0 * soft_share, 1.0))

    def to_unit(self, image: np.ndarray) -> np.ndarray:
        return piecewise_linear(image, self.physical, self.unit)

    def to_physical(self, unit: np.ndarray) -> np.ndarray:
        return piecewise_linear(unit, self.unit, self.physical)

    def to_meta(self) -> dict:
        return {"lo": self.lo, "hi": self.hi, "knots": [list(self.physical), list(self.unit)]}

    @classmethod
    def from_meta(cls, intensity: dict) -> "IntensityMap":
        """From ``meta.json``'s ``intensity``; files written before knots existed hold a plain lo/hi window."""
        if "knots" in intensity:
            physical, unit = intensity["knots"]
            return cls(tuple(float(v) for v in physical), tuple(float(v) for v in unit))
        return cls.window(float(intensity["lo"]), float(intensity["hi"]))


def piecewise_linear(x: np.ndarray, xp: Sequence[float], fp: Sequence[float]) -> np.ndarray:
    """``np.interp(x, xp, fp)`` for strictly increasing ``xp`` and ``fp``, in float32 (NaN stays NaN).

    np.interp works in float64: 1.6 s for one AutoPET-sized volume (55 M voxels), which generation pays
    for every sample; summing the clipped segments in place takes 0.2 s. Within 1e-4 of it, exact at the
    ends.
    """
    x = np.asarray(x, np.float32)
    out = np.full(x.shape, fp[0], np.float32)
    segment = np.empty_like(out)
    for x0, x1, y0, y1 in zip(xp[:-1], xp[1:], fp[:-1], fp[1:]):
        np.clip(x, np.float32(x0), np.float32(x1), out=segment)
        segment -= np.float32(x0)
        segment *= np.float32((y1 - y0) / (x1 - x0))
        out += segment
    return np.clip(out, np.float32(fp[0]), np.float32(fp[-1]), out=out)
