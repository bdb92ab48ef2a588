"""Unconditional wavelet discriminator for unpaired mode (after USIS, Eskandar et al.).

In unpaired mode there is no label map for the real images (dataset B), so this
D only judges realism. It reads the image through its Haar bands at every scale
(a wavelet pyramid, as in SWAGAN/USIS): generators tend to get high frequencies
wrong, and the detail bands expose them directly instead of leaving the
network to learn high-pass filters.

No spectral norm: this D is regularised with R1 (see ``medsynth.models.adversarial``),
and stacking both would over-constrain it.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medsynth.models.wavelet import haar_bands

_RES_SCALE = 1.0 / math.sqrt(2.0)


class WaveletResBlockDown(nn.Module):
    """Pre-activation residual block that halves the resolution."""

    def __init__(self, fin: int, fout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(fin, fin, 3, padding=1)
        self.conv2 = nn.Conv2d(fin, fout, 3, padding=1)
        # Learned even when fin == fout so every level has the same structure.
        self.shortcut = nn.Conv2d(fin, fout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Pool before the 1x1 shortcut: both are linear, so the order is free and pooling first is cheaper.
        s = self.shortcut(F.avg_pool2d(x, 2))
        h = self.conv1(F.leaky_relu(x, 0.2))
        h = self.conv2(F.leaky_relu(h, 0.2))
        h = F.avg_pool2d(h, 2)
        # 1/sqrt(2) keeps the variance of the sum of two roughly independent branches at one.
        return (s + h) * _RES_SCALE


class WaveletDiscriminator(nn.Module):
    """Image (B, C, H, W) -> realism logits (B,).

    Level 0 projects the Haar bands of the image (H/2) to ``channels[0]``; each further entry of
    ``channels`` adds a downsampling residual block, after which the Haar bands of the image at
    that scale are projected by a 1x1 conv and added to the features. The final features are at
    H / 2**len(channels), so H and W must be divisible by 2**len(channels).
    """

    def __init__(self, image_channels: int, channels: Sequence[int]) -> None:
        super().__init__()
        channels = list(channels)
        if not channels:
            raise ValueError("WaveletDiscriminator needs at least one entry in channels, got an empty list")
        if image_channels < 1:
            raise ValueError(f"image_channels must be >= 1, got {image_channels}")
        self.image_channels = image_channels
        self.levels = len(channels)
        bands = 4 * image_channels
        self.from_wavelets = nn.ModuleList(nn.Conv2d(bands, ch, 1) for ch in channels)
        self.blocks = nn.ModuleList(WaveletResBlockDown(channels[i - 1], channels[i]) for i in range(1, len(channels)))
        self.fc = nn.Linear(channels[-1], 1)

    def check_size(self, height: int, width: int) -> None:
        """Raise if an image of this size cannot go through every pyramid level."""
        factor = 2**self.levels
        if height % factor or width % factor:
            raise ValueError(
                f"WaveletDiscriminator with {self.levels} levels needs H and W divisible by {factor}, "
                f"got H={height}, W={width}; use a larger or differently sized image or fewer channels entries"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.image_channels:
            raise ValueError(
                f"WaveletDiscriminator expects (B, {self.image_channels}, H, W) images, got shape {tuple(x.shape)}"
            )
        self.check_size(x.shape[-2], x.shape[-1])
        img = x
        h = self.from_wavelets[0](haar_bands(img))
        for block, from_wavelets in zip(self.blocks, self.from_wavelets[1:]):
            h = block(h)
            # Average pooling keeps the image in its original intensity range at every scale
            # (the orthonormal LL band would double it per level).
            img = F.avg_pool2d(img, 2)
            h = h + from_wavelets(haar_bands(img))
        h = F.leaky_relu(h, 0.2)
        # Mean (not sum) pooling keeps the logit scale independent of the image size.
        return self.fc(h.mean(dim=(2, 3))).squeeze(1)
