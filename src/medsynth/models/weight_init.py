"""OASIS initialisation of the layers without spectral norm.

OASIS (and USIS after it) draws every conv and linear weight from a
xavier-normal distribution with gain 0.02 and sets the biases to zero. For a
spectrally normalised layer its ``m.weight`` is the normalised weight that the
next forward recomputes from ``weight_orig``, so in effect only the layers
without spectral norm are initialised this way; the others keep PyTorch's
default. This reproduces that: small SPADE modulations (close to plain
normalisation at the start), a small first and last generator layer, a small
discriminator head.
"""

from __future__ import annotations

from torch import nn

GAIN = 0.02


def init_unnormalised_(model: nn.Module, gain: float = GAIN) -> nn.Module:
    """Xavier-normal weights (``gain``) and zero biases for every conv/linear layer of ``model``
    that has no spectral norm; returns ``model``."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and not hasattr(m, "weight_orig"):
            nn.init.xavier_normal_(m.weight, gain=gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model
