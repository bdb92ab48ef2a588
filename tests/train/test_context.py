"""A run's fixed context: the inputs refused, the slices validated and sampled, the identity."""

import pytest
import torch

from medsynth.data.slice_set import evenly_spaced


def test_evenly_spaced_keeps_the_ends_and_at_most_the_limit(make_toy_slices):
    data = make_toy_slices(n=10, size=16)
    sub = evenly_spaced(data, 4)
    assert sub.z == [0, 3, 6, 9] and torch.equal(sub.labels, data.labels[[0, 3, 6, 9]])
    assert evenly_spaced(data, 10) is data


def test_unpaired_context_compares_with_dataset_b_and_refuses_without_it(make_context, dataset_b, toy_set):
    ctx = make_context(dataset_b, dataset_b, mode="unpaired", val_max_slices=3)
    assert ctx.real_train is dataset_b and torch.equal(ctx.reference.images, evenly_spaced(dataset_b, 3).images)
    assert len(ctx.val) == 3 and len(ctx.fixed) == 3 and "loss_du" in ctx.loss_columns
    paired = make_context(val_max_slices=3)
    assert paired.reference is paired.val and paired.real_train is toy_set
    assert paired.fingerprint != ctx.fingerprint
    with pytest.raises(ValueError, match="images_train"):
        make_context(mode="unpaired")


def test_label_maps_and_images_of_different_sizes_are_refused(make_context, make_toy_slices):
    b = make_toy_slices(n=4, size=16)
    with pytest.raises(ValueError, match="same slice.size"):
        make_context(b, b, mode="unpaired")
