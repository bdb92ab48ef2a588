import pytest
import torch

from medsynth.models import PRESETS, build_discriminator, build_generator, get_preset
from medsynth.models.ema import EMA
from medsynth.models.losses import (class_balance_weights, class_stats_l1, class_stats_to_targets_l1, class_targets,
                                    diversity_reward, labelmix_mask, seg_ce_fake, seg_ce_real)
from medsynth.models.registry import ModelSpec, check_size
from medsynth.data.slice_set import one_hot

TINY = ModelSpec(g_channels=(16, 16, 8), d_channels=(8, 16), z_dim=4, spade_hidden=8)


def test_unknown_preset_raises_with_known_names():
    with pytest.raises(KeyError, match="tiny"):
        get_preset("oasis-9000")


def test_presets_build_and_paper_size_is_oasis_scale():
    g = build_generator(PRESETS["oasis-256"], num_classes=10)
    n = sum(p.numel() for p in g.parameters())
    assert 60e6 < n < 80e6  # OASIS generator at 64 base channels is ~71 M parameters
    assert g.conv_img.out_channels == 1  # one image channel for CT/MR, not RGB


def test_size_check_names_the_setting():
    with pytest.raises(ValueError, match="slice.size"):
        check_size(PRESETS["tiny"], 60)
    check_size(PRESETS["tiny"], 64)


def test_generator_and_discriminator_shapes_and_gradients():
    torch.manual_seed(0)
    G, D = build_generator(TINY, 5), build_discriminator(TINY, 5)
    labels = torch.randint(0, 5, (2, 16, 16))
    fake = G(one_hot(labels, 5))
    assert fake.shape == (2, 1, 16, 16)
    assert fake.abs().max() <= 1.0  # tanh output
    logits = D(fake)
    assert logits.shape == (2, 6, 16, 16)  # N + 1 classes
    seg_ce_real(logits, one_hot(labels, 5)).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in G.parameters() if p.requires_grad)
    assert any(p.grad.abs().sum() > 0 for p in G.parameters())


def test_noise_changes_the_image_and_fixed_noise_reproduces_it():
    torch.manual_seed(0)
    G = build_generator(TINY, 3).eval()
    oh = one_hot(torch.randint(0, 3, (1, 16, 16)), 3)
    z1, z2 = G.noise(1, 16, 16), G.noise(1, 16, 16)
    assert not torch.allclose(G(oh, z1), G(oh, z2))
    assert torch.equal(G(oh, z1), G(oh, z1))


def test_spatial_noise_option():
    spec = ModelSpec(**{**TINY.to_dict(), "spatial_noise": True})
    G = build_generator(spec, 3)
    z = G.noise(2, 16, 16)
    assert z.shape == (2, 4, 16, 16)
    assert G(one_hot(torch.zeros(2, 16, 16, dtype=torch.long), 3), z).shape == (2, 1, 16, 16)


def test_class_balance_gives_each_present_class_equal_total_weight():
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[0, :2, :2] = 1  # 4 pixels of class 1, 60 of class 0
    w = class_balance_weights(one_hot(labels, 3))
    assert torch.isclose(w[labels == 0].sum(), w[labels == 1].sum())
    assert torch.isclose(w.mean(), torch.tensor(1.0))


def test_seg_losses_reward_the_right_answers():
    labels = torch.randint(0, 3, (2, 8, 8))
    oh = one_hot(labels, 3)
    good = torch.cat([torch.full((2, 1, 8, 8), -10.0), 10 * oh], dim=1)  # confident, correct classes
    fake_like = torch.cat([torch.full((2, 1, 8, 8), 10.0), torch.zeros(2, 3, 8, 8)], dim=1)
    assert seg_ce_real(good, oh) < 1e-3 < seg_ce_real(fake_like, oh)
    assert seg_ce_fake(fake_like) < 1e-3 < seg_ce_fake(good)


def test_labelmix_mask_is_constant_within_each_class():
    labels = torch.randint(0, 4, (3, 16, 16))
    mask = labelmix_mask(labels, 4, torch.Generator().manual_seed(1))
    assert mask.shape == (3, 1, 16, 16)
    for b in range(3):
        for c in labels[b].unique():
            assert mask[b, 0][labels[b] == c].unique().numel() == 1


def test_labelmix_mask_mixes_classes_independently_per_image():
    """Over many images every class is sometimes real and sometimes fake, and images differ."""
    labels = torch.arange(4).repeat_interleave(4)[None].expand(64, 4, 16).reshape(64, 16, 4).transpose(1, 2)
    mask = labelmix_mask(labels, 4, torch.Generator().manual_seed(0))
    per_class = torch.stack([mask[:, 0][labels == c].reshape(64, -1)[:, 0] for c in range(4)], dim=1)
    assert set(per_class.unique().tolist()) == {0.0, 1.0}
    assert 0.3 < per_class.mean() < 0.7
    assert len({tuple(r.tolist()) for r in per_class}) > 4


def test_ema_is_the_exponential_average():
    torch.manual_seed(0)
    G = build_generator(TINY, 3)
    ema = EMA(G, decay=0.9)
    before = {k: v.clone() for k, v in ema.model.state_dict().items()}
    with torch.no_grad():
        for p in G.parameters():
            p.add_(1.0)
    ema.update(G)
    current = dict(G.state_dict())
    for k, v in ema.model.state_dict().items():
        if v.is_floating_point():
            assert torch.allclose(v, 0.9 * before[k] + 0.1 * current[k], atol=1e-6), k
    assert not any(p.requires_grad for p in ema.model.parameters())


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_runs_forward_and_backward_at_its_smallest_size(name):
    from medsynth.models.registry import build_wavelet_discriminator

    spec = PRESETS[name]
    size = spec.min_size_multiple
    torch.manual_seed(0)
    G, D, Du = build_generator(spec, 4), build_discriminator(spec, 4), build_wavelet_discriminator(spec)
    fake = G(one_hot(torch.randint(0, 4, (1, size, size)), 4))
    assert fake.shape == (1, 1, size, size)
    logits, realness = D(fake), Du(fake)
    assert logits.shape == (1, 5, size, size) and realness.shape == (1,)
    (logits.mean() + realness.sum()).backward()
    assert all(p.grad is not None for p in G.parameters())


def test_class_targets_of_a_set_and_nan_for_classes_it_never_shows():
    labels = torch.zeros(3, 8, 8, dtype=torch.uint8)
    labels[:, 4:] = 1
    labels[2, 0, 0] = 2  # class 2: one pixel, too few for a texture
    images = torch.zeros(3, 1, 8, 8)
    images[0, 0, :4] = 0.5
    images[1, 0, :4] = torch.tensor([0.0, 1.0]).repeat(16).view(4, 8)  # class 0: mean 0.5, std 0.5
    images[:, 0, 4:] = -0.5
    targets = class_targets(images.half(), labels, 4, chunk=2)  # chunks of two slices: sums carry across them
    n0 = 3 * 32 - 1
    mean0 = (32 * 0.5 + 16 * 1.0) / n0
    assert torch.allclose(targets[0, :3], torch.tensor([mean0, -0.5, 0.0]), atol=1e-3)
    # Std per slice where the class covers >= 16 pixels, averaged: class 0 has stds 0, 0.5, 0.
    assert torch.allclose(targets[1, :2], torch.tensor([0.5 / 3, 0.0]), atol=1e-3)
    assert torch.isnan(targets[1, 2]) and torch.isnan(targets[:, 3]).all()


def _toy_batch():
    labels = torch.randint(0, 3, (4, 8, 8))
    images = torch.rand(4, 1, 8, 8) * 2 - 1
    return images, labels, torch.nn.functional.one_hot(labels, 4).permute(0, 3, 1, 2).float()


def test_class_stats_l1_is_zero_for_the_real_image_and_sees_mean_and_texture():
    images, labels, onehot = _toy_batch()
    assert class_stats_l1(images, images, onehot).item() < 1e-6  # the perfect generator
    assert abs(class_stats_l1(images + 0.25, images, onehot).item() - 0.25) < 1e-5  # a shift: the mean term
    # Each class painted flat in its real mean: the mean term is 0, the std term its real std.
    counts = onehot.sum(dim=(2, 3), keepdim=True)
    means = (onehot * images).sum(dim=(2, 3), keepdim=True) / counts.clamp(min=1)
    flat = (onehot * means).sum(dim=1, keepdim=True)
    std = ((onehot * (images - means) ** 2).sum(dim=(2, 3)) / counts[..., 0, 0].clamp(min=1)).sqrt()
    textured = counts[..., 0, 0] >= 16
    assert abs(class_stats_l1(flat, images, onehot).item() - std[textured].mean().item()) < 1e-3


def test_class_stats_to_targets_is_zero_for_the_image_dataset_itself_and_grows_with_a_shift():
    images, labels, onehot = _toy_batch()
    targets = class_targets(images, labels, 4)
    # One slice of 64 pixels over 3 classes: ~21 pixels each, above the texture threshold.
    own = class_stats_to_targets_l1(images[:1], onehot[:1], class_targets(images[:1], labels[:1], 4))
    assert own.item() < 1e-5  # the "perfect generator" (class 3 absent: NaN, skipped)
    shifted = class_stats_to_targets_l1(images[:1] + 0.25, onehot[:1], class_targets(images[:1], labels[:1], 4))
    assert abs(shifted.item() - 0.25) < 1e-4  # the std is unchanged by a shift
    assert torch.isfinite(class_stats_to_targets_l1(images, onehot, targets))


def test_diversity_reward_is_zero_for_copies_and_clipped_at_the_margin():
    body = torch.zeros(4, 1, 8, 8)
    body[..., 2:6, 2:6] = 1
    same = torch.rand(2, 1, 8, 8).repeat(2, 1, 1, 1)
    assert diversity_reward(same, body, 0.1).item() == 0.0  # a generator that ignores its noise
    apart = same.clone()
    apart[2:] += 0.04
    assert abs(diversity_reward(apart, body, 0.1).item() + 0.04) < 1e-6
    apart[2:, :, :2] += 5.0  # outside the body: not counted
    assert abs(diversity_reward(apart, body, 0.1).item() + 0.04) < 1e-6
    assert diversity_reward(same + torch.rand_like(same), body, 0.1).item() == pytest.approx(-0.1)  # clipped
