"""Shared fixtures: tiny deterministic data, so tests never need network or GPUs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medsynth.train.data import SliceSet

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data" / "totalseg-example"


def toy_slices(n: int = 8, size: int = 32, seed: int = 0) -> SliceSet:
    """Discs of three classes on a background, with class-dependent intensities and noise."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    labels = torch.zeros(n, size, size, dtype=torch.long)
    for i in range(n):
        cx, cy = (torch.randint(size // 3, 2 * size // 3, (2,), generator=g)).tolist()
        r = size // 3
        labels[i][(xx - cx) ** 2 + (yy - cy) ** 2 < r**2] = 1
        labels[i][(xx - cx) ** 2 + (yy - cy) ** 2 < (r // 2) ** 2] = 2
    levels = torch.tensor([-1.0, 0.0, 0.6])
    images = levels[labels][:, None] + 0.05 * torch.randn(n, 1, size, size, generator=g)
    return SliceSet(images.clamp(-1, 1), labels, (labels > 0).float()[:, None], ["toy"] * n, list(range(n)))


@pytest.fixture
def toy_set() -> SliceSet:
    return toy_slices()


@pytest.fixture
def make_toy_slices():
    """The toy-data factory, for tests that need more or larger slices."""
    return toy_slices
