"""SPADE: spatially-adaptive normalisation conditioned on the label map (+ noise)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def param_free_norm(kind: str, channels: int) -> nn.Module:
    # Instance norm by default: no running statistics, so the EMA generator
    # needs no batch-norm re-estimation and batch size 1 inference is exact.
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False)
    if kind == "batch":
        return nn.BatchNorm2d(channels, affine=False)
    raise ValueError(f"unknown param-free norm {kind!r}; use 'instance' or 'batch'")


class SPADE(nn.Module):
    def __init__(self, channels: int, cond_channels: int, hidden: int, norm: str = "instance") -> None:
        super().__init__()
        self.norm = param_free_norm(norm, channels)
        self.shared = nn.Sequential(nn.Conv2d(cond_channels, hidden, 3, padding=1), nn.ReLU(inplace=True))
        self.gamma = nn.Conv2d(hidden, channels, 3, padding=1)
        self.beta = nn.Conv2d(hidden, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if cond.shape[-2:] != x.shape[-2:]:
            cond = F.interpolate(cond, size=x.shape[-2:], mode="nearest")
        h = self.shared(cond)
        return self.norm(x) * (1 + self.gamma(h)) + self.beta(h)
