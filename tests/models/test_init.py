"""OASIS initialisation: xavier-normal (gain 0.02), zero biases for the layers without spectral norm."""

import math

import pytest
import torch
from torch import nn

from medsynth.models import PRESETS, build_discriminator, build_generator

NUM_CLASSES = 10


def unnormalised_layers(G: nn.Module, D: nn.Module) -> dict[str, nn.Conv2d]:
    """The layers OASIS initialises: G's first conv, the SPADE convs, G's output conv, D's 1 x 1 head."""
    layers = {"G.fc": G.fc, "G.conv_img": G.conv_img, "D.out": D.out}
    for name, m in G.named_modules():
        if name.endswith(("shared.0", ".gamma", ".beta")):
            layers[f"G.{name}"] = m
    return layers


def fans(w: torch.Tensor) -> tuple[int, int]:
    k = w[0, 0].numel()
    return w.shape[1] * k, w.shape[0] * k


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    return build_generator(PRESETS["tiny"], NUM_CLASSES), build_discriminator(PRESETS["tiny"], NUM_CLASSES)


def test_layers_without_spectral_norm_are_xavier_normal_with_gain_002_and_zero_bias(nets):
    G, D = nets
    layers = unnormalised_layers(G, D)
    # Exactly the convs without spectral norm: nothing left out, nothing else.
    plain = {f"{tag}.{n}" for tag, net in (("G", G), ("D", D)) for n, m in net.named_modules()
             if isinstance(m, nn.Conv2d) and not hasattr(m, "weight_orig")}
    assert plain == set(layers)
    pooled = []
    for name, m in layers.items():
        fan_in, fan_out = fans(m.weight)
        expected = 0.02 * math.sqrt(2.0 / (fan_in + fan_out))
        z = (m.weight.detach() / expected).flatten()
        assert 0.7 < float(z.std()) < 1.3, (name, float(z.std()))
        assert abs(float(z.mean())) < 0.3, name
        assert m.bias is not None and torch.count_nonzero(m.bias) == 0, name
        pooled.append(z)
    z = torch.cat(pooled)
    assert abs(float(z.std()) - 1) < 0.03 and abs(float(z.mean())) < 0.03  # normal: ~68 % within one std
    assert 0.64 < float((z.abs() < 1).float().mean()) < 0.72


def test_spectrally_normalised_layers_keep_the_default_init(nets):
    G, D = nets
    sn = [(n, m) for net in (G, D) for n, m in net.named_modules() if hasattr(m, "weight_orig")]
    assert len(sn) > 10
    for name, m in sn:
        # PyTorch's conv default: kaiming-uniform with a = sqrt(5), i.e. U(-b, b), b = 1 / sqrt(fan_in).
        fan_in, _ = fans(m.weight_orig)
        bound = 1 / math.sqrt(fan_in)
        w = m.weight_orig.detach().abs()
        assert float(w.max()) <= bound * (1 + 1e-6) and float(w.max()) > 0.9 * bound, name
        if w.numel() >= 100:  # enough weights for a std estimate within 20 %
            assert abs(float(w.pow(2).mean().sqrt()) / (bound / math.sqrt(3)) - 1) < 0.2, name
        if m.bias is not None:
            assert torch.count_nonzero(m.bias) == m.bias.numel(), name
