"""Deterministic patient-level train/val/test split.

Each case gets a fixed pseudo-random number from (seed, case id) alone, and
the parts are intervals of [0, 1) sized by the ratios. A case's part therefore
does not depend on which other cases exist: adding a case never moves an
existing one. Only when a part would be empty (tiny cohorts) is the case whose
number lies nearest to that part's interval moved into it, so val and test are
never silently empty.
"""

from __future__ import annotations

import hashlib
from typing import Mapping, Sequence

PARTS = ("train", "val", "test")


def case_number(case_id: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}:{case_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_cases(case_ids: Sequence[str], ratios: Mapping[str, float], seed: int) -> dict[str, str]:
    """Map case id -> part. ``ratios`` has train/val/test fractions summing to 1."""
    if len(set(case_ids)) != len(case_ids):
        dup = sorted({c for c in case_ids if list(case_ids).count(c) > 1})
        raise ValueError(f"duplicate case ids {dup}: every case id must be unique")
    total = sum(ratios[p] for p in PARTS)
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"split ratios must sum to 1, got {dict(ratios)} (sum {total})")
    bounds, lo = {}, 0.0
    for p in PARTS:
        bounds[p] = (lo, lo + ratios[p])
        lo += ratios[p]
    numbers = {c: case_number(c, seed) for c in sorted(case_ids)}
    parts = {}
    for c, u in numbers.items():
        parts[c] = next((p for p in PARTS if bounds[p][0] <= u < bounds[p][1]), PARTS[-1])

    needed = [p for p in PARTS if ratios[p] > 0]
    if len(case_ids) < len(needed):
        raise ValueError(f"{len(case_ids)} cases cannot fill the parts {needed}: add cases or set a ratio to 0")
    for p in needed:
        if p in parts.values():
            continue
        centre = sum(bounds[p]) / 2
        counts = {q: list(parts.values()).count(q) for q in PARTS}
        donors = [c for c in numbers if counts[parts[c]] > 1]
        chosen = min(donors, key=lambda c: (abs(numbers[c] - centre), c))
        parts[chosen] = p
    return parts
