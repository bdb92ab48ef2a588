"""Evaluate and utility stream the test set: their memory does not grow with it (issue 29).

Each stage runs in a fresh process (``tests/helpers/memory_run.py``) on a synthetic test set of the
demo's size (2 cases of 32 slices at 64 px) and on one 16x larger; what the stage adds to the
resident set after its imports may grow by at most ``GROWTH_MB``: a few numbers per slice and the
allocator's noise (30-80 MB measured; the through-plane differences are a histogram of fixed size). Without the per-case heap trim (io.heap) evaluate grew by 380 MB here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from memory_cohort import peak_memory, write_cohort

DEMO_TEST_CASES = 2
GROWTH_MB = 100.0


@pytest.mark.parametrize("stage", ["evaluate", "utility"])
def test_memory_stays_flat_as_the_test_set_grows_16x(stage: str, tmp_path: Path) -> None:
    added = {}
    for scale in (1, 16):
        cohort = write_cohort(tmp_path / f"x{scale}", DEMO_TEST_CASES * scale, train_cases=4)
        report = peak_memory(stage, cohort, tmp_path / f"x{scale}")
        added[scale] = report["peak_mb"] - report["ready_mb"]
    print(f"{stage}: +{added[1]:.0f} MB at 1x, +{added[16]:.0f} MB at 16x")
    assert added[1] > 0
    assert added[16] <= added[1] + GROWTH_MB, f"{stage} grew from +{added[1]:.0f} to +{added[16]:.0f} MB"
