"""Networks built by architecture name (the presets live in ``medsynth.models.presets``)."""

from __future__ import annotations

from torch import nn

from medsynth.models.discriminator import OASISDiscriminator
from medsynth.models.generator import OASISGenerator
from medsynth.models.presets import PRESETS, ModelSpec, check_size, get_preset

__all__ = ["PRESETS", "ModelSpec", "build_discriminator", "build_generator", "build_wavelet_discriminator",
           "check_size", "get_preset"]


def build_generator(spec: ModelSpec, num_classes: int, image_channels: int = 1) -> nn.Module:
    return OASISGenerator(
        num_classes, image_channels, spec.g_channels, spec.z_dim, spec.spade_hidden, spec.norm, spec.spatial_noise,
        spec.context_slices,
    )


def build_discriminator(spec: ModelSpec, num_classes: int, image_channels: int = 1) -> nn.Module:
    return OASISDiscriminator(num_classes, image_channels, spec.d_channels)


def build_wavelet_discriminator(spec: ModelSpec, image_channels: int = 1) -> nn.Module:
    from medsynth.models.wavelet_discriminator import WaveletDiscriminator

    return WaveletDiscriminator(image_channels, spec.w_channels)
