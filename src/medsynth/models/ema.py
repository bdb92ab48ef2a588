"""Exponential moving average of generator weights, updated with fused tensor ops."""

from __future__ import annotations

import copy

import torch
from torch import nn

from medsynth.models.spectral import refresh_spectral_norm


class EMA:
    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    def _pairs(self, model: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        # Spectral norm's u/v vectors are buffers and get averaged too: not unit vectors
        # any more, but a warm start for ``refresh``, which must run before the model is used.
        src = [t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()]
        dst = [t for t in (*self.model.parameters(), *self.model.buffers()) if t.is_floating_point()]
        return src, dst

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        src, dst = self._pairs(model)
        torch._foreach_lerp_(dst, src, 1.0 - self.decay)

    def refresh(self) -> float:
        """Make the averaged model's spectral norms exact (see ``models.spectral``) before it is
        evaluated, sampled or saved; returns the largest relative sigma correction."""
        return refresh_spectral_norm(self.model)

    def state_dict(self) -> dict:
        return self.model.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state)
