"""Tissues to intensities: CT in HU and an MR-like T1 contrast, with texture, partial volume and bias field."""

from __future__ import annotations

import math

import numpy as np

from medsynth.data.phantom.grid import Grid, uniform
from medsynth.data.phantom.tissues import FIXED_HU, NO_SIGNAL_MR, T, TISSUE_TABLE, TISSUES


def texture_field(rng: np.random.Generator, g: Grid, n_waves: int = 8) -> np.ndarray:
    """Smooth unit-variance random field defined in mm, so it is grid independent."""
    field = np.zeros((g.x.shape[0], g.y.shape[1], g.z.shape[2]), dtype=np.float32)
    for _ in range(n_waves):
        d = rng.normal(size=3)
        d /= np.linalg.norm(d)
        k = 2.0 * math.pi / uniform(rng, 15.0, 45.0)
        phase = uniform(rng, 0.0, 2.0 * math.pi)
        field += np.cos(float(k * d[0]) * g.x + float(k * d[1]) * g.y + float(k * d[2]) * g.z + phase)
    return field * np.float32(math.sqrt(2.0 / n_waves))


def _partial_volume(volume: np.ndarray) -> np.ndarray:
    """A scanner's point spread, about a voxel wide."""
    # scipy here, not at the top: the config checks read phantom case ids at every Snakemake start,
    # and scipy.ndimage is a fifth of a second of it.
    from scipy import ndimage

    return ndimage.gaussian_filter(volume, sigma=(0.55, 0.55, 0.4), truncate=3.0)


def render_ct(rng: np.random.Generator, tissue: np.ndarray, field: np.ndarray) -> np.ndarray:
    hu = TISSUE_TABLE[:, 1].copy()
    offsets = np.clip(rng.normal(0.0, 4.0, size=hu.shape), -10.0, 10.0).astype(np.float32)
    offsets[list(FIXED_HU)] = 0.0
    hu += offsets
    hu[T["table"]] = uniform(rng, 130.0, 260.0)
    noise_sd = uniform(rng, 10.0, 20.0)
    ct = hu[tissue] + TISSUE_TABLE[:, 2][tissue] * field
    ct = _partial_volume(ct)
    ct += rng.standard_normal(ct.shape, dtype=np.float32) * np.float32(noise_sd)
    return np.clip(np.rint(ct), -1024, 3071).astype(np.int16)


def render_mr(rng: np.random.Generator, tissue: np.ndarray, field: np.ndarray, g: Grid) -> np.ndarray:
    values = TISSUE_TABLE[:, 3] * rng.uniform(0.9, 1.1, size=len(TISSUES)).astype(np.float32)
    values *= np.float32(uniform(rng, 0.8, 1.2))  # arbitrary MR units: per-scan gain
    texture = TISSUE_TABLE[:, 4].copy()
    texture[list(NO_SIGNAL_MR)] = 0.0
    # Noise at 2-4 % of the brightest tissue (fat), as in a real abdominal MR; the air then
    # carries Rician noise of that size, which a body mask must not take for tissue.
    noise_sd = uniform(rng, 18.0, 36.0)
    bias = _bias_field(rng, g)
    mr = values[tissue] + texture[tissue] * field
    mr = _partial_volume(mr)
    mr *= bias
    # Rician: magnitude of a complex signal with gaussian noise in both channels,
    # which is why the background is a small positive value, never negative.
    re = mr + rng.standard_normal(mr.shape, dtype=np.float32) * np.float32(noise_sd)
    im = rng.standard_normal(mr.shape, dtype=np.float32) * np.float32(noise_sd)
    mr = np.sqrt(re * re + im * im)
    return np.clip(np.rint(mr), 0, 32767).astype(np.int16)


def _bias_field(rng: np.random.Generator, g: Grid) -> np.ndarray:
    """Smooth multiplicative coil shading, a random quadratic within +-15-30 % (surface coils)."""
    xs = g.x / max(float(np.abs(g.x).max()), 1.0)
    ys = g.y / max(float(np.abs(g.y).max()), 1.0)
    zs = g.z / max(float(np.abs(g.z).max()), 1.0)
    terms = (xs, ys, zs, xs * xs, ys * ys, zs * zs, xs * ys, xs * zs, ys * zs)
    coefs = rng.normal(size=len(terms))
    poly = np.zeros((g.x.shape[0], g.y.shape[1], g.z.shape[2]), dtype=np.float32)
    for c, term in zip(coefs, terms):
        poly += float(c) * term
    peak = max(float(np.abs(poly).max()), 1e-6)
    return 1.0 + poly * np.float32(uniform(rng, 0.15, 0.3) / peak)
