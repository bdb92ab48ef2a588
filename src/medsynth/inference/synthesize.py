"""Running a generator: noise drawn up front from a seed, then the generator over label maps in batches.

One code path for validation, sample grids, the benchmarks and generation, so a
sample depends only on (seed, noise settings, label maps), never on the batch
size or the device's batching.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from medsynth.train.data import generator_input

NOISE_MODES = ("volume", "slice")


def volume_noise(G: torch.nn.Module, z: Sequence[int], h: int, w: int, g: torch.Generator,
                 sigma_slices: float) -> torch.Tensor:
    """Noise for the slices at axial indices ``z`` of one synthetic volume.

    A noise vector (one per image) is the same in every slice: one patient. A
    spatial noise map varies along z as a Gaussian-smoothed random field of
    standard deviation ``sigma_slices`` (in slices), rescaled to unit variance,
    so neighbouring slices' texture is correlated as in tissue instead of the
    same in every slice (a vertical streak in a coronal view) or unrelated
    (a jump between slices); 0 repeats one map.
    """
    n = len(z)
    if n == 0 or not getattr(G, "spatial_noise", False) or sigma_slices <= 0:
        one = G.noise(1, h, w, generator=g)
        return one.expand(n, *one.shape[1:])
    z = np.asarray(z, dtype=np.int64)
    radius = int(np.ceil(4 * sigma_slices))
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float32) / sigma_slices) ** 2)
    taps /= taps.square().sum().sqrt()  # unit variance for independent unit-variance draws
    span = int(z.max() - z.min()) + 1
    white = G.noise(span + 2 * radius, h, w, generator=g)
    field = sum(t * white[j : j + span] for j, t in enumerate(taps.tolist()))
    return field[torch.from_numpy(z - z.min())]


def draw_noise(G: torch.nn.Module, n: int, h: int, w: int, seed: int, noise: str,
               z: Sequence[int] | None = None, sigma_slices: float = 0.0) -> torch.Tensor:
    """The noise of ``n`` slices, all drawn up front from ``seed`` (see ``synthesize``)."""
    g = torch.Generator().manual_seed(seed)
    if noise == "volume":
        return volume_noise(G, range(n) if z is None else z, h, w, g, sigma_slices)
    if noise == "slice":
        return G.noise(n, h, w, generator=g)
    raise ValueError(f"generate.noise must be one of {', '.join(NOISE_MODES)}, got {noise!r}")


@torch.no_grad()
def synthesize(G: torch.nn.Module, labels: torch.Tensor, num_classes: int, seed: int, batch: int,
               device: torch.device, noise: str = "slice", context: torch.Tensor | None = None,
               z: Sequence[int] | None = None, sigma_slices: float = 0.0) -> torch.Tensor:
    """(N, H, W) class ids -> (N, 1, H, W) images on the CPU.

    ``noise`` "slice" (the default, for slices of any cases: validation, sample
    grids, benchmarks): a draw per slice; "volume", for the slices of one
    volume at axial indices ``z``: one patient, see ``volume_noise`` (and
    ``sigma_slices``). ``context`` (N, 2k, H, W): the neighbouring slices' label
    maps of a generator trained with context. All noise is drawn up front from
    ``seed``, so the images do not depend on the batch size: (seed, noise
    settings, label maps) reproduce a sample.
    """
    n, h, w = labels.shape
    return run_generator(G, labels, context, draw_noise(G, n, h, w, seed, noise, z, sigma_slices), num_classes,
                         batch, device)


@torch.no_grad()
def run_generator(G: torch.nn.Module, labels: torch.Tensor, context: torch.Tensor | None, noise: torch.Tensor,
                  num_classes: int, batch: int, device: torch.device) -> torch.Tensor:
    """(N, H, W) class ids, their context (N, 2k, H, W) or None, and their noise -> (N, 1, H, W) on the CPU."""
    n, h, w = labels.shape
    out = []
    for i in range(0, n, batch):
        chunk = labels[i : i + batch].to(device)
        near = None if context is None else context[i : i + batch].to(device).long()
        out.append(G(generator_input(chunk, near, num_classes), noise[i : i + batch].to(device)).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, 1, h, w)
