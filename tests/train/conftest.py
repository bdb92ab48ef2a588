"""A toy run's fixed context and fresh state, for testing the loop's pieces one at a time."""

from __future__ import annotations

import pytest

from toy_run import TOY_SPEC, toy_settings

from medsynth.train.context import build_context
from medsynth.train.state import new_state

__all__ = ["TOY_SPEC", "toy_settings"]


@pytest.fixture
def make_context(tmp_path, toy_set):
    """``make(images_train=None, images_val=None, **settings)``: the context of a toy run in ``tmp_path/run``."""

    def make(images_train=None, images_val=None, **kw):
        return build_context(toy_settings(**kw), 3, toy_set, toy_set, tmp_path / "run", spec=TOY_SPEC,
                             images_train=images_train, images_val=images_val)

    return make


@pytest.fixture
def dataset_b(toy_set):
    """Unpaired mode's images: the toy images mirrored, so never pixel-aligned with the label maps."""
    return toy_set.__class__(toy_set.images.flip(-1), toy_set.labels, toy_set.masks, toy_set.case_ids, toy_set.z)


@pytest.fixture
def toy_run(make_context, dataset_b):
    """``make(**settings) -> (context, state)``: a toy run as training starts it (unpaired: B = ``dataset_b``)."""

    def make(**kw):
        b = dataset_b if kw.get("mode") == "unpaired" else None
        ctx = make_context(b, b, **kw)
        return ctx, new_state(ctx.settings, ctx.spec, ctx.num_classes, ctx.device, ctx.rank)

    return make
