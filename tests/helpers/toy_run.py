"""The toy run's architecture and settings: small enough to train a few steps on a CPU in seconds."""

from __future__ import annotations

from medsynth.models.registry import ModelSpec
from medsynth.train.settings import TrainSettings

TOY_SPEC = ModelSpec(g_channels=(16, 16, 8), d_channels=(8, 16), w_channels=(8, 16), z_dim=4, spade_hidden=8)


def toy_settings(**kw) -> TrainSettings:
    base = dict(steps=6, batch_size=2, eval_every=3, sample_every=3, checkpoint_every=3, val_max_slices=4,
                device="cpu", ema_decay=0.9)
    return TrainSettings(**{**base, **kw})
