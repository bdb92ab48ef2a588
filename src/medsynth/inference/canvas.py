"""Where a synthetic volume is generated: every labelled slice, over the whole labelled extent.

Training sees ``slice.size`` crops of the slices the slice rule keeps; a synthetic
volume must hold generated tissue under every labelled voxel of the label map
shipped beside it, including slices with little body (the top and bottom of an
organ) and anatomy wider than the crop (arms, a wide abdomen at a fine spacing).
The generator is convolutional, so it runs on a canvas that covers the labelled
region of the whole volume (``canvas`` mode), or on overlapping tiles of the
training size blended with a smooth weight (``tiles`` mode). Outside the label
map's body the volume holds the background value (-1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from medsynth.data.slice_context import context_labels
from medsynth.inference.synthesize import draw_noise, run_generator

INPLANE_MODES = ("canvas", "tiles")


@dataclass(frozen=True)
class Canvas:
    """A box on the preprocessed grid: ``canvas[n, i, j] = volume[x0 + i, y0 + j, z[n]]``."""

    x0: int
    y0: int
    width: int  # along x
    height: int  # along y
    z: np.ndarray  # the axial indices generated: every slice that carries a label (the body class included)


def _span(lo: int, hi: int, size: int, multiple: int) -> tuple[int, int]:
    """(start, length) of a window centred on [lo, hi), at least ``size`` long, a multiple of ``multiple``."""
    length = max(size, -(-(hi - lo) // multiple) * multiple)
    return int(np.floor((lo + hi - length) / 2)), length


def plan_canvas(label: np.ndarray, size: int, multiple: int) -> Canvas:
    """The canvas of a training-grid label map (X, Y, Z): the bounding box of its labelled voxels over all
    slices, centred, at least the training size and padded to the generator's size multiple."""
    labelled = label > 0
    z = np.flatnonzero(labelled.any(axis=(0, 1))).astype(np.int32)
    if not z.size:
        raise ValueError("the label map holds only background: nothing to generate")
    xs, ys = np.flatnonzero(labelled.any(axis=(1, 2))), np.flatnonzero(labelled.any(axis=(0, 2)))
    x0, width = _span(int(xs[0]), int(xs[-1]) + 1, size, multiple)
    y0, height = _span(int(ys[0]), int(ys[-1]) + 1, size, multiple)
    return Canvas(x0, y0, width, height, z)


def crop(volume: np.ndarray, x0: int, y0: int, width: int, height: int, z: np.ndarray, fill: float) -> np.ndarray:
    """``volume[x0:x0+width, y0:y0+height, z]`` as (len(z), width, height), ``fill`` beyond the volume."""
    out = np.full((len(z), width, height), fill, dtype=volume.dtype)
    sx0, sy0 = max(x0, 0), max(y0, 0)
    sx1, sy1 = min(x0 + width, volume.shape[0]), min(y0 + height, volume.shape[1])
    if sx1 > sx0 and sy1 > sy0:
        out[:, sx0 - x0 : sx1 - x0, sy0 - y0 : sy1 - y0] = np.moveaxis(volume[sx0:sx1, sy0:sy1][:, :, z], 2, 0)
    return out


def paste(volume: np.ndarray, stack: np.ndarray, canvas: Canvas) -> None:
    """Inverse of ``crop``: write the part of a (n, width, height) stack that lies inside the volume."""
    x0, y0 = canvas.x0, canvas.y0
    sx0, sy0 = max(x0, 0), max(y0, 0)
    sx1, sy1 = min(x0 + canvas.width, volume.shape[0]), min(y0 + canvas.height, volume.shape[1])
    if sx1 > sx0 and sy1 > sy0:
        volume[sx0:sx1, sy0:sy1, canvas.z] = np.moveaxis(stack[:, sx0 - x0 : sx1 - x0, sy0 - y0 : sy1 - y0], 0, 2)


def tile_starts(length: int, tile: int) -> list[int]:
    """Tile origins along one side: half-overlapping, the last one flush with the end."""
    if length <= tile:
        return [0]
    stride = max(1, tile // 2)
    starts = list(range(0, length - tile, stride))
    return [*starts, length - tile]


def tile_weight(tile: int) -> torch.Tensor:
    """(tile, tile) blending weight: a separable raised cosine, largest at the centre and never zero,
    so each pixel is dominated by the tiles that see it far from their edge (where a convolution
    sees padding) and a pixel covered by one tile keeps its value."""
    t = 0.5 - 0.5 * torch.cos(2 * torch.pi * (torch.arange(tile, dtype=torch.float32) + 0.5) / tile)
    return t[:, None] * t[None, :]


@torch.no_grad()
def generate_stack(G: torch.nn.Module, num_classes: int, labels: np.ndarray, z: np.ndarray, seed: int, batch: int,
                   device: torch.device, noise: str, sigma_slices: float, inplane: str = "canvas",
                   tile: int = 0) -> np.ndarray:
    """(n, W, H) class ids of one volume's canvas slices at axial indices ``z`` -> (n, W, H) images in [-1, 1],
    -1 outside the body (label 0).

    The neighbouring-slice context and the noise (``inference.synthesize.draw_noise``: one
    volume, the spatial noise map smoothed along z by ``sigma_slices``) are those of the whole
    canvas; ``tiles`` cuts both into the training size ``tile`` and blends the outputs.
    """
    n, width, height = labels.shape
    k = getattr(G, "context_slices", 0)
    context = torch.from_numpy(context_labels(labels, [""] * n, z, k))
    lab = torch.from_numpy(np.ascontiguousarray(labels))  # uint8: widened a batch at a time
    zs = draw_noise(G, n, width, height, seed, noise, z, sigma_slices)
    if inplane == "canvas":
        out = run_generator(G, lab, context, zs, num_classes, batch, device)[:, 0]
    elif inplane == "tiles":
        out = _tiled(G, lab, context, zs, num_classes, batch, device, tile)
    else:
        raise ValueError(f"generate.inplane must be one of {', '.join(INPLANE_MODES)}, got {inplane!r}")
    out = out.numpy()
    out[labels == 0] = -1.0
    return out


def _tiled(G: torch.nn.Module, labels: torch.Tensor, context: torch.Tensor, noise, num_classes: int,
           batch: int, device: torch.device, tile: int) -> torch.Tensor:
    """``run_generator`` on half-overlapping ``tile`` x ``tile`` windows of the canvas, blended by ``tile_weight``;
    a batch of slices at a time, its noise computed once for all its tiles."""
    n, width, height = labels.shape
    if tile <= 0:
        raise ValueError("tiles need the training size (the generator's data.slice.size)")
    w = tile_weight(tile)
    windows = [(x, y) for x in tile_starts(width, tile) for y in tile_starts(height, tile)]
    out = []
    for i in range(0, n, batch):
        lab, ctx, nz = labels[i : i + batch], context[i : i + batch], noise[i : i + batch]
        total, weight = torch.zeros(len(lab), width, height), torch.zeros(width, height)
        for x, y in windows:
            cut = (slice(None), slice(x, x + tile), slice(y, y + tile))
            if not bool(lab[cut].any()):
                continue  # background in every slice: -1 whatever the generator paints
            # A spatial noise map is cut like the labels; a noise vector is the same in every tile.
            part = nz[:, :, x : x + tile, y : y + tile] if nz.dim() == 4 else nz
            total[cut] += w * run_generator(G, lab[cut], ctx[:, :, x : x + tile, y : y + tile], part, num_classes,
                                            len(lab), device)[:, 0]
            weight[x : x + tile, y : y + tile] += w
        out.append(total / weight.clamp(min=1e-12))  # 0 / 0 only where every covering tile was background
    return torch.cat(out) if out else torch.zeros(0, width, height)
