"""A sample spilled to disk gives numpy's quantiles of the joined values, exactly."""

import numpy as np
import pytest

from medsynth.metrics import spilled
from medsynth.metrics.spilled import SpilledSample

LEVELS = np.linspace(0, 1, 1001)


@pytest.mark.parametrize("kind", ["spread", "ties", "zeros", "tiny"])
def test_spilled_quantiles_are_numpys_to_the_last_bit(kind: str, monkeypatch) -> None:
    monkeypatch.setattr(spilled, "CHUNK", 1000)  # several reads per pass
    g = np.random.default_rng(len(kind))
    values = np.abs(g.normal(size=12345)).astype(np.float32) * 3
    if kind == "ties":
        values = np.round(values, 1).astype(np.float32)  # few distinct values: ranks inside runs of equal ones
    if kind == "zeros":
        values[: len(values) // 2] = 0
    if kind == "tiny":
        values = values * np.float32(1e-30)  # denormal and tiny exponents: every bit of the pattern counts
    sample = SpilledSample(budget_bytes=4000)
    for part in np.array_split(values, 9):
        sample.add(part)
    assert sample.file is not None and len(sample) == values.size
    np.testing.assert_array_equal(sample.quantiles(LEVELS), np.quantile(values, LEVELS))
    assert sample.mean() == pytest.approx(float(values.astype(np.float64).mean()), rel=1e-12)


def test_a_sample_within_its_budget_stays_in_memory_and_answers_as_numpy() -> None:
    values = np.abs(np.random.default_rng(0).normal(size=500)).astype(np.float32)
    sample = SpilledSample()
    sample.add(values[:200])
    sample.add(values[200:])
    assert sample.file is None
    assert sample.mean() == float(values.mean())  # numpy's float32 mean, as before spilling existed
    np.testing.assert_array_equal(sample.quantiles(LEVELS), np.quantile(values, LEVELS))
    with pytest.raises(ValueError, match="non-negative"):
        sample.add(np.array([-1.0], np.float32))
