"""OASIS segmentation discriminator: a U-Net that labels every pixel with one of N+1 classes.

Channel 0 is "fake"; channels 1..N are the semantic classes 0..N-1.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm

from medsynth.models.classes import ClassAxis
from medsynth.models.weight_init import init_unnormalised_


class ResBlockD(nn.Module):
    def __init__(self, fin: int, fout: int, resample: str, first: bool = False) -> None:
        super().__init__()
        if resample not in ("up", "down"):
            raise ValueError(f"resample must be 'up' or 'down', got {resample!r}")
        self.resample = resample
        self.first = first
        self.conv1 = spectral_norm(nn.Conv2d(fin, fout, 3, padding=1))
        self.conv2 = spectral_norm(nn.Conv2d(fout, fout, 3, padding=1))
        self.shortcut = spectral_norm(nn.Conv2d(fin, fout, 1)) if fin != fout else None

    def _scale(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, 2) if self.resample == "down" else F.interpolate(x, scale_factor=2, mode="nearest")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x
        if self.resample == "up":
            s = self._scale(s)
        if self.shortcut is not None:
            s = self.shortcut(s)
        if self.resample == "down":
            s = self._scale(s)
        h = x if self.first else F.leaky_relu(x, 0.2)
        if self.resample == "up":
            h = self._scale(h)
        h = self.conv2(F.leaky_relu(self.conv1(h), 0.2))
        if self.resample == "down":
            h = self._scale(h)
        return s + h


class OASISDiscriminator(nn.Module):
    def __init__(self, num_classes: int, image_channels: int, channels: Sequence[int]) -> None:
        super().__init__()
        self.num_classes = num_classes
        ch = [image_channels, *channels]
        self.down = nn.ModuleList(ResBlockD(ch[i], ch[i + 1], "down", first=(i == 0)) for i in range(len(channels)))
        # Decoder: the first up block sees the bottleneck; later ones the skip concatenated in.
        ups = [ResBlockD(ch[-1], ch[-2], "up")]
        for i in range(len(channels) - 1, 0, -1):
            ups.append(ResBlockD(2 * ch[i], ch[max(i - 1, 1)], "up"))
        self.up = nn.ModuleList(ups)
        self.out = nn.Conv2d(ch[1], num_classes + 1, 1)
        init_unnormalised_(self)  # the 1 x 1 head, as OASIS does

    def class_axes(self) -> dict[str, ClassAxis]:
        """The output head: channel 0 is "fake", then one per class (``models.classes``)."""
        axis = ClassAxis(dim=0, offset=1)
        return {"out.weight": axis, "out.bias": axis}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
        x = self.up[0](x)
        for i, block in enumerate(self.up[1:], start=2):
            x = block(torch.cat([skips[-i], x], dim=1))
        return self.out(x)
