"""OASIS generator: SPADE residual blocks fed with the one-hot label map and 3D noise.

With neighbouring-slice context (2.5D) the label input also holds the one-hot
maps of the k slices below and above, so an organ that begins or ends near a
slice shapes that slice's image as it does its neighbours'.

3D noise (OASIS): a noise vector per image is broadcast over the label map's
pixels and concatenated to the one-hot channels, so every SPADE layer sees
label + noise; resampling the noise gives a different image for the same map.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm

from medsynth.models.classes import ClassAxis
from medsynth.models.norms import SPADE
from medsynth.models.weight_init import init_unnormalised_


class SPADEResBlock(nn.Module):
    def __init__(self, fin: int, fout: int, cond: int, hidden: int, norm: str) -> None:
        super().__init__()
        fmid = min(fin, fout)
        self.learned_shortcut = fin != fout
        self.norm_0 = SPADE(fin, cond, hidden, norm)
        self.conv_0 = spectral_norm(nn.Conv2d(fin, fmid, 3, padding=1))
        self.norm_1 = SPADE(fmid, cond, hidden, norm)
        self.conv_1 = spectral_norm(nn.Conv2d(fmid, fout, 3, padding=1))
        if self.learned_shortcut:
            self.norm_s = SPADE(fin, cond, hidden, norm)
            self.conv_s = spectral_norm(nn.Conv2d(fin, fout, 1, bias=False))

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        shortcut = self.conv_s(self.norm_s(x, cond)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, cond), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, cond), 0.2))
        return shortcut + dx


class OASISGenerator(nn.Module):
    def __init__(
        self,
        num_classes: int,
        image_channels: int,
        channels: Sequence[int],
        z_dim: int,
        spade_hidden: int,
        norm: str = "instance",
        spatial_noise: bool = False,
        context_slices: int = 0,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.z_dim = z_dim
        self.spatial_noise = spatial_noise
        self.context_slices = context_slices
        # 2.5D: the one-hot maps of the k slices below and above come after the slice's own.
        self.label_channels = num_classes * (1 + 2 * context_slices)
        cond = self.label_channels + z_dim
        if len(channels) < 2:
            raise ValueError(f"generator needs at least two channel entries, got {list(channels)}")
        # One block per consecutive channel pair; upsampling between blocks.
        self.num_up = len(channels) - 2
        self.fc = nn.Conv2d(cond, channels[0], 3, padding=1)
        self.blocks = nn.ModuleList(
            SPADEResBlock(channels[i], channels[i + 1], cond, spade_hidden, norm) for i in range(len(channels) - 1)
        )
        self.conv_img = nn.Conv2d(channels[-1], image_channels, 3, padding=1)
        init_unnormalised_(self)  # fc, the SPADE convs and conv_img, as OASIS does

    def class_axes(self) -> dict[str, ClassAxis]:
        """The tensors that read the label map: their input channels are one block of classes per slice
        of context, then the noise (``models.classes``)."""
        axis = ClassAxis(dim=1, groups=1 + 2 * self.context_slices)
        spade = [name for name, m in self.named_modules() if isinstance(m, SPADE)]
        return {"fc.weight": axis, **{f"{name}.shared.0.weight": axis for name in spade}}

    def noise(self, batch: int, height: int, width: int, generator: torch.Generator | None = None,
              device: torch.device | None = None) -> torch.Tensor:
        """Noise for ``forward``: (B, z) broadcast over space, or (B, z, H, W) if spatially varying."""
        shape = (batch, self.z_dim, height, width) if self.spatial_noise else (batch, self.z_dim)
        return torch.randn(shape, generator=generator, device=device)

    def forward(self, onehot: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = onehot.shape
        if c != self.label_channels:
            raise ValueError(f"generator takes {self.label_channels} label channels ({self.num_classes} classes x "
                             f"{1 + 2 * self.context_slices} slices), got {c}: pass the neighbouring slices' "
                             "maps it was trained with (train.data.generator_input)")
        if z is None:
            z = self.noise(b, h, w, device=onehot.device)
        if z.dim() == 2:
            z = z[:, :, None, None].expand(-1, -1, h, w)
        cond = torch.cat([onehot, z.to(onehot.dtype)], dim=1)
        x = F.interpolate(cond, size=(h >> self.num_up, w >> self.num_up), mode="nearest")
        x = self.fc(x)
        for i, block in enumerate(self.blocks):
            x = block(x, cond)
            if i < self.num_up:
                x = F.interpolate(x, scale_factor=2, mode="nearest")
        return torch.tanh(self.conv_img(F.leaky_relu(x, 0.2)))
