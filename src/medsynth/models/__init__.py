"""OASIS-family networks: SPADE generator, segmentation discriminator, losses, EMA.

The names below are loaded on first use: ``medsynth.models.presets`` (plain data)
must be importable without torch, e.g. when Snakemake checks a config.
"""

from __future__ import annotations

__all__ = ["ModelSpec", "PRESETS", "build_discriminator", "build_generator", "get_preset"]


def __getattr__(name: str):
    if name in __all__:
        from medsynth.models import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'medsynth.models' has no attribute {name!r}")
