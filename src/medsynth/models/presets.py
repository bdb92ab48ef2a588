"""Architecture presets by name: plain data, no torch, so a config can be checked without it.

Unknown names raise with the list of known ones; ``medsynth.models.registry``
builds the networks from these specs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ModelSpec:
    g_channels: tuple[int, ...]
    d_channels: tuple[int, ...]
    w_channels: tuple[int, ...] = (32, 64, 128)  # wavelet discriminator (unpaired mode)
    z_dim: int = 64
    spade_hidden: int = 128
    norm: str = "instance"
    spatial_noise: bool = False
    context_slices: int = 0  # 2.5D: label maps of this many neighbouring slices each side (train.context_slices)

    @property
    def min_size_multiple(self) -> int:
        """Image sides must be multiples of this (generator start size, D pyramid depth)."""
        return max(2 ** (len(self.g_channels) - 2), 2 ** len(self.d_channels), 2 ** len(self.w_channels))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "ModelSpec":
        """Inverse of ``to_dict`` after a checkpoint round trip, which turns tuples into lists."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def _oasis(ch: int) -> ModelSpec:
    # The OASIS paper's 256 x 256 layout: 6 SPADE blocks from 8 x 8, D with 6 levels.
    return ModelSpec(
        g_channels=(16 * ch, 16 * ch, 16 * ch, 8 * ch, 4 * ch, 2 * ch, ch),
        d_channels=(2 * ch, 2 * ch, 4 * ch, 4 * ch, 8 * ch, 8 * ch),
        w_channels=(ch, 2 * ch, 4 * ch, 8 * ch, 8 * ch, 8 * ch),
    )


PRESETS: dict[str, ModelSpec] = {
    # Demo and tests: trains on two CPU cores in minutes at 32-64 px.
    # Per-pixel noise: with instance norm a per-image noise vector barely changes the image
    # (two samples differed by a mean per-pixel std of 0.025 in [-1, 1] units after the demo, 0.043 with it).
    "tiny": ModelSpec(g_channels=(64, 64, 32, 16), d_channels=(16, 32, 64), w_channels=(16, 32, 64), z_dim=16,
                      spade_hidden=32, spatial_noise=True),
    "small": ModelSpec(g_channels=(256, 256, 128, 64, 32), d_channels=(32, 64, 128, 256),
                       w_channels=(32, 64, 128, 256), z_dim=32, spade_hidden=64),
    "oasis-256": _oasis(64),
}


def get_preset(name: str, **overrides) -> ModelSpec:
    if name not in PRESETS:
        raise KeyError(f"unknown model preset {name!r}; known presets: {sorted(PRESETS)}")
    base = PRESETS[name].to_dict()
    base.update({k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()})
    return ModelSpec(**base)


def check_size(spec: ModelSpec, size: int, name: str = "model") -> None:
    if size % spec.min_size_multiple:
        raise ValueError(
            f"{name}: image size {size} must be a multiple of {spec.min_size_multiple} for this architecture; "
            "change slice.size or the preset"
        )
