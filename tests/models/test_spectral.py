"""The EMA generator's spectral norms: averaged u, v are off until refreshed."""

import torch

from medsynth.models import build_discriminator, build_generator
from medsynth.models.ema import EMA
from medsynth.models.registry import ModelSpec
from medsynth.data.slice_set import one_hot

TINY = ModelSpec(g_channels=(16, 16, 8), d_channels=(8, 16), z_dim=4, spade_hidden=8)


def trained_ema() -> tuple[torch.nn.Module, EMA]:
    """G after a few training-mode steps (one power iteration each) and the EMA that followed it."""
    torch.manual_seed(0)
    G = build_generator(TINY, 3)
    ema = EMA(G, decay=0.9)
    for _ in range(5):
        with torch.no_grad():
            for p in G.parameters():
                p.add_(0.02 * torch.randn_like(p))
        G(one_hot(torch.randint(0, 3, (2, 16, 16)), 3))
        ema.update(G)
    return G, ema


def test_refresh_makes_every_sigma_the_largest_singular_value(sigma_errors):
    _, ema = trained_ema()
    before = sigma_errors(ema.state_dict())
    assert max(before.values()) > 0.05  # what the averaged u, v give
    weights = {k: v.clone() for k, v in ema.state_dict().items() if not k.endswith(("weight_u", "weight_v"))}
    oh = one_hot(torch.randint(0, 3, (2, 16, 16)), 3)
    z = ema.model.noise(2, 16, 16, generator=torch.Generator().manual_seed(1))
    out_before = ema.model(oh, z)
    correction = ema.refresh()
    after = sigma_errors(ema.state_dict())
    assert after.keys() == before.keys() and max(after.values()) < 1e-3, after
    assert correction > 0.05  # it reports how far off the model was
    assert all(torch.equal(ema.state_dict()[k], v) for k, v in weights.items())  # the averages stay
    assert not torch.allclose(ema.model(oh, z), out_before, atol=1e-3)  # eval mode uses the new sigma
    assert ema.refresh() < 1e-4  # converged: a second refresh changes next to nothing
    assert not ema.model.training  # still the eval-mode model


def test_refresh_does_not_touch_the_trained_generator_or_layers_without_spectral_norm(sigma_errors):
    G, ema = trained_ema()
    g_state = {k: v.clone() for k, v in G.state_dict().items()}
    ema.refresh()
    assert all(torch.equal(G.state_dict()[k], v) for k, v in g_state.items())
    D = build_discriminator(TINY, 3).eval()
    from medsynth.models.spectral import refresh_spectral_norm

    refresh_spectral_norm(D)
    assert max(sigma_errors(D.state_dict()).values()) < 1e-3
