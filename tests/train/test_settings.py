"""Training settings and the run fingerprint: what restarts a run and what only extends or observes it."""

import pytest

from medsynth.models.registry import ModelSpec
from medsynth.train.settings import TrainSettings, fingerprint

SPEC = ModelSpec(g_channels=(16, 16, 8), d_channels=(8, 16), z_dim=4, spade_hidden=8)


def fp(data="slices", classes=3, spec=SPEC, **kw):
    return fingerprint(TrainSettings(**kw), spec, classes, data)


def test_steps_cadences_device_mask_threshold_and_val_max_slices_keep_the_fingerprint():
    assert fp(steps=10, eval_every=1, sample_every=2, checkpoint_every=3, device="cuda", ram_cache_gb=1.0,
              compile=True, mask_threshold=0.0, val_max_slices=7) == fp()


@pytest.mark.parametrize("change", [dict(lr_g=5e-4), dict(seed=1), dict(lambda_diversity=1.0), dict(lambda_class_stats=1.0), dict(mode="unpaired"), dict(data="other"),
                                    dict(classes=4), dict(spec=ModelSpec(g_channels=(8, 8, 8), d_channels=(8, 16)))])
def test_what_a_run_learns_from_changes_the_fingerprint(change):
    assert fp(**change) != fp()


def test_another_modes_loss_weights_keep_the_fingerprint_and_its_own_change_it():
    assert fp(lambda_seg=3.0, r1_every=4, lambda_adv=2.0, r1_gamma=5.0) == fp()
    assert fp(mode="unpaired", lambda_labelmix=3.0) == fp(mode="unpaired")
    assert fp(lambda_labelmix=3.0) != fp() and fp(mode="unpaired", lambda_seg=3.0) != fp(mode="unpaired")


def test_unknown_mode_and_precision_and_an_odd_mode_seeking_batch_are_refused():
    with pytest.raises(ValueError, match="train.mode"):
        TrainSettings.from_dict({"mode": "cyclic"})
    with pytest.raises(ValueError, match="train.precision"):
        TrainSettings.from_dict({"precision": "fp8"})
    with pytest.raises(ValueError, match="lambda_diversity needs an even train.batch_size"):
        TrainSettings.from_dict({"lambda_diversity": 1.0, "batch_size": 3})
    assert TrainSettings.from_dict({"lambda_diversity": 1.0, "batch_size": 4}).weights().diversity == 1.0
