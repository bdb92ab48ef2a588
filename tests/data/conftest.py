"""Fixtures for the data-stage tests: a real (flipped, scaled, translated) affine and small phantom cases."""

from __future__ import annotations

from typing import Callable

import numpy as np
import pytest

# Stored L-P-S (x and y flipped), anisotropic, off-origin; every value is exact in float32
# so that a NIfTI round trip can be compared bit for bit.
FLIPPED_AFFINE = np.array(
    [
        [-2.5, 0.0, 0.0, 31.0],
        [0.0, -1.75, 0.0, -12.5],
        [0.0, 0.0, 3.0, -40.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)

PHANTOM_SHAPE = (96, 96, 16)
PHANTOM_SPACING = (4.0, 4.0, 6.0)


@pytest.fixture
def flipped_affine() -> np.ndarray:
    return FLIPPED_AFFINE.copy()


@pytest.fixture(scope="session")
def phantom_case() -> Callable[[int], object]:
    """make_case(index, seed=0) on a small grid, cached per index (arrays are shared: do not modify)."""
    from medsynth.data.phantom import make_case

    cache: dict[int, object] = {}

    def get(index: int):
        if index not in cache:
            cache[index] = make_case(index, seed=0, shape=PHANTOM_SHAPE, spacing=PHANTOM_SPACING)
        return cache[index]

    return get
