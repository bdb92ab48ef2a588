"""OASIS-family networks: SPADE generator, segmentation discriminator, losses, EMA."""

from medsynth.models.registry import ModelSpec, build_discriminator, build_generator, get_preset, PRESETS

__all__ = ["ModelSpec", "PRESETS", "build_discriminator", "build_generator", "get_preset"]
