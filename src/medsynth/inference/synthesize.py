"""Running a generator: noise from a seed, then the generator over label maps in batches.

One code path for validation, sample grids, the benchmarks and generation, so a
sample depends only on (seed, noise settings, label maps), never on the batch
size or the device's batching.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np
import torch

from medsynth.data.slice_set import generator_input

NOISE_MODES = ("volume", "slice")


class SmoothField:
    """A spatial noise map per slice of one volume, smoothed along z, computed for the slices asked for.

    Slice j's white noise comes from its own seed (``seed``, j), so any run of slices, in any
    batches, reads the same field, and memory holds only the batch asked for and the filter's
    reach around it: a whole-body volume's field at 256 x 256 would otherwise be gigabytes.
    Indexed like the tensor it stands for: ``field[i0:i1]`` (positions in ``z``), ``field[:, :, a:b, c:d]``.
    """

    def __init__(self, G: torch.nn.Module, z: Sequence[int], h: int, w: int, seed: int, sigma_slices: float):
        self.G, self.z, self.seed = G, np.asarray(z, dtype=np.int64), seed
        self.shape = (len(self.z), G.z_dim, h, w)
        self.radius = int(np.ceil(4 * sigma_slices))
        taps = torch.exp(-0.5 * (torch.arange(-self.radius, self.radius + 1, dtype=torch.float32)
                                 / sigma_slices) ** 2)
        self.taps = taps / taps.square().sum().sqrt()  # unit variance for independent unit-variance draws

    def dim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index) -> torch.Tensor:
        rows, rest = (index[0], index[1:]) if isinstance(index, tuple) else (index, ())
        picked = self.z[rows] if isinstance(rows, slice) else self.z[np.asarray(rows)]
        out = self._field(np.atleast_1d(picked))
        return out[(slice(None), *rest)] if rest else out

    def _white(self, j: int) -> torch.Tensor:
        digest = hashlib.sha256(f"{self.seed}:{j}".encode()).digest()
        g = torch.Generator().manual_seed(int.from_bytes(digest[:8], "big") & 0x7FFFFFFFFFFFFFFF)
        return self.G.noise(1, self.shape[2], self.shape[3], generator=g)[0]

    def _field(self, zs: np.ndarray) -> torch.Tensor:
        if zs.size == 0:
            return torch.zeros(0, *self.shape[1:])
        lo = int(zs.min()) - self.radius
        white = torch.stack([self._white(j) for j in range(lo, int(zs.max()) + self.radius + 1)])
        span = white.shape[0] - 2 * self.radius
        field = sum(t * white[k : k + span] for k, t in enumerate(self.taps.tolist()))
        return field[torch.from_numpy(zs - (lo + self.radius))]


def volume_noise(G: torch.nn.Module, z: Sequence[int], h: int, w: int, seed: int,
                 sigma_slices: float) -> torch.Tensor | SmoothField:
    """Noise for the slices at axial indices ``z`` of one synthetic volume.

    A noise vector (one per image) is the same in every slice: one patient. A
    spatial noise map varies along z as a Gaussian-smoothed random field of
    standard deviation ``sigma_slices`` (in slices), rescaled to unit variance
    (``SmoothField``), so neighbouring slices' texture is correlated as in tissue
    instead of the same in every slice (a vertical streak in a coronal view) or
    unrelated (a jump between slices); 0 repeats one map.
    """
    n = len(z)
    if n == 0 or not getattr(G, "spatial_noise", False) or sigma_slices <= 0:
        one = G.noise(1, h, w, generator=torch.Generator().manual_seed(seed))
        return one.expand(n, *one.shape[1:])
    return SmoothField(G, z, h, w, seed, sigma_slices)


def draw_noise(G: torch.nn.Module, n: int, h: int, w: int, seed: int, noise: str,
               z: Sequence[int] | None = None, sigma_slices: float = 0.0) -> torch.Tensor | SmoothField:
    """The noise of ``n`` slices from ``seed`` (see ``synthesize``): a tensor, or for a smoothed spatial map
    a ``SmoothField`` that computes the slices asked for."""
    if noise == "volume":
        return volume_noise(G, range(n) if z is None else z, h, w, seed, sigma_slices)
    if noise == "slice":
        return G.noise(n, h, w, generator=torch.Generator().manual_seed(seed))
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
def run_generator(G: torch.nn.Module, labels: torch.Tensor, context: torch.Tensor | None,
                  noise: torch.Tensor | SmoothField, num_classes: int, batch: int, device: torch.device) -> torch.Tensor:
    """(N, H, W) class ids, their context (N, 2k, H, W) or None, and their noise -> (N, 1, H, W) on the CPU."""
    n, h, w = labels.shape
    out = []
    for i in range(0, n, batch):
        chunk = labels[i : i + batch].to(device).long()  # stored compact (uint8), one-hot per batch
        near = None if context is None else context[i : i + batch].to(device).long()
        out.append(G(generator_input(chunk, near, num_classes), noise[i : i + batch].to(device)).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, 1, h, w)
