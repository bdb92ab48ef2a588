import math

import numpy as np
import pytest
import pywt
import torch
import torch.nn.functional as F
from torch import nn

import medsynth.models.wavelet_discriminator as wd
from medsynth.models.adversarial import nonsat_d_loss, nonsat_g_loss, r1_penalty
from medsynth.models.wavelet import haar_bands, haar_dwt2, haar_idwt2
from medsynth.models.wavelet_discriminator import WaveletDiscriminator


# --- Haar transform -----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_haar_dwt2_matches_pywt_band_by_band(dtype):
    x = torch.randn(2, 3, 8, 6, generator=torch.Generator().manual_seed(0), dtype=dtype)
    bands = haar_dwt2(x)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    for b in range(2):
        for c in range(3):
            ca, (ch, cv, cd) = pywt.dwt2(x[b, c].numpy(), "haar")
            for ours, ref in zip(bands, (ca, ch, cv, cd)):
                assert ours.dtype == dtype
                np.testing.assert_allclose(ours[b, c].numpy(), ref, atol=tol, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_haar_idwt2_inverts_and_matches_pywt(dtype):
    x = torch.randn(2, 3, 8, 6, generator=torch.Generator().manual_seed(1), dtype=dtype)
    bands = haar_dwt2(x)
    rec = haar_idwt2(*bands)
    torch.testing.assert_close(rec, x)
    # Reconstruct from arbitrary band values too, not only from a forward transform.
    rnd = [torch.randn(2, 3, 4, 3, dtype=dtype) for _ in range(4)]
    ours = haar_idwt2(*rnd)
    for b in range(2):
        for c in range(3):
            ref = pywt.idwt2((rnd[0][b, c].numpy(), tuple(t[b, c].numpy() for t in rnd[1:])), "haar")
            np.testing.assert_allclose(ours[b, c].numpy(), ref, atol=1e-5, rtol=0)


def test_haar_is_orthonormal_parseval():
    x = torch.randn(2, 3, 8, 6, dtype=torch.float64)
    energy = sum(b.pow(2).sum() for b in haar_dwt2(x))
    torch.testing.assert_close(energy, x.pow(2).sum())


def test_odd_size_raises_naming_the_shape():
    with pytest.raises(ValueError, match=r"\(1, 1, 7, 6\)"):
        haar_dwt2(torch.zeros(1, 1, 7, 6))
    with pytest.raises(ValueError, match=r"\(1, 1, 6, 5\)"):
        haar_bands(torch.zeros(1, 1, 6, 5))


def test_constant_image_has_only_lowpass_energy():
    ll, lh, hl, hh = haar_dwt2(torch.full((1, 2, 4, 4), 3.0))
    torch.testing.assert_close(ll, torch.full_like(ll, 6.0))
    for detail in (lh, hl, hh):
        assert torch.count_nonzero(detail) == 0


def test_haar_bands_stacks_bands_on_channels():
    x = torch.randn(2, 3, 8, 6)
    out = haar_bands(x)
    assert out.shape == (2, 12, 4, 3)
    torch.testing.assert_close(out[:, 3:6], haar_dwt2(x)[1])


def test_gradients_flow_with_expected_constant_values():
    x = torch.randn(1, 1, 4, 4, requires_grad=True)
    ll, lh, hl, hh = haar_dwt2(x)
    (g_ll,) = torch.autograd.grad(ll.sum(), x, retain_graph=True)
    torch.testing.assert_close(g_ll, torch.full_like(x, 0.5))
    # lh = top row minus bottom row of each 2x2 block.
    (g_lh,) = torch.autograd.grad(lh.sum(), x, retain_graph=True)
    expected_lh = torch.tensor([0.5, -0.5]).repeat(2)[:, None].expand(4, 4)
    torch.testing.assert_close(g_lh[0, 0], expected_lh)
    # hh = diagonal checkerboard.
    (g_hh,) = torch.autograd.grad(hh.sum(), x)
    expected_hh = torch.tensor([[0.5, -0.5], [-0.5, 0.5]]).repeat(2, 2)
    torch.testing.assert_close(g_hh[0, 0], expected_hh)


# --- Wavelet discriminator ----------------------------------------------------------------------


def _tiny_d() -> WaveletDiscriminator:
    torch.manual_seed(0)
    return WaveletDiscriminator(image_channels=1, channels=(16, 32, 64))


def test_discriminator_output_shape_and_all_params_get_gradients():
    d = _tiny_d()
    out = d(torch.randn(3, 1, 32, 32))
    assert out.shape == (3,)
    out.sum().backward()
    for name, p in d.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_discriminator_too_small_input_raises():
    d = _tiny_d()
    with pytest.raises(ValueError, match=r"H=12, W=32.*3 levels|3 levels.*H=12, W=32"):
        d(torch.randn(1, 1, 12, 32))
    with pytest.raises(ValueError, match="channels"):
        WaveletDiscriminator(1, ())


def test_discriminator_reads_wavelets_at_every_level(monkeypatch):
    calls = []

    def counting(x):
        calls.append(tuple(x.shape[-2:]))
        return haar_bands(x)

    monkeypatch.setattr(wd, "haar_bands", counting)
    _tiny_d()(torch.randn(2, 1, 32, 32))
    assert calls == [(32, 32), (16, 16), (8, 8)]


def test_discriminator_supports_r1_double_backward():
    d = _tiny_d()
    r1 = r1_penalty(d, torch.randn(2, 1, 32, 32))
    r1.backward()
    assert d.from_wavelets[0].weight.grad.abs().sum() > 0


# --- Non-saturating losses ----------------------------------------------------------------------


def _softplus(v: float) -> float:
    return math.log1p(math.exp(v))


def test_nonsat_losses_match_hand_computed_values():
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.0, 3.0])
    d_expected = (_softplus(-2.0) + _softplus(1.0)) / 2 + (_softplus(0.0) + _softplus(3.0)) / 2
    g_expected = (_softplus(0.0) + _softplus(-3.0)) / 2
    assert nonsat_d_loss(real, fake).item() == pytest.approx(d_expected, rel=1e-6)
    assert nonsat_g_loss(fake).item() == pytest.approx(g_expected, rel=1e-6)


def test_nonsat_losses_move_the_right_way():
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.0, 3.0])
    assert nonsat_d_loss(real + 1, fake) < nonsat_d_loss(real, fake)
    assert nonsat_d_loss(real, fake + 1) > nonsat_d_loss(real, fake)
    assert nonsat_g_loss(fake + 1) < nonsat_g_loss(fake)


# --- R1 -----------------------------------------------------------------------------------------


class _Linear(nn.Module):
    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.w * x).sum(dim=(1, 2, 3))


class _Quadratic(nn.Module):
    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.w * x**2).sum(dim=(1, 2, 3))


def test_r1_of_linear_d_is_squared_weight_norm():
    w = torch.arange(6, dtype=torch.float64).reshape(1, 2, 3) / 10
    real = torch.randn(4, 1, 2, 3, dtype=torch.float64)
    r1 = r1_penalty(_Linear(w), real)
    assert r1.item() == pytest.approx(w.pow(2).sum().item())


def test_r1_of_quadratic_d_is_mean_of_four_x_squared():
    real = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    r1 = r1_penalty(_Quadratic(torch.ones(2, 4, 4, dtype=torch.float64)), real)
    expected = (4 * real.pow(2).sum(dim=(1, 2, 3))).mean()
    torch.testing.assert_close(r1.detach(), expected)


def test_r1_backpropagates_into_d_parameters_and_leaves_input_alone():
    w = torch.rand(1, 4, 4, dtype=torch.float64) + 0.5
    d = _Quadratic(w.clone())
    real = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    r1 = r1_penalty(d, real)
    r1.backward()
    # R1 = mean_b sum (2 w x)^2, so dR1/dw = mean_b 8 w x^2.
    torch.testing.assert_close(d.w.grad, (8 * w * real.pow(2)).mean(dim=0))
    assert real.grad is None and not real.requires_grad


# --- Adversarial sanity -------------------------------------------------------------------------


def _smooth(n: int, g: torch.Generator) -> torch.Tensor:
    coarse = torch.randn(n, 1, 4, 4, generator=g)
    return F.interpolate(coarse, size=(16, 16), mode="bilinear", align_corners=False)


def _noise(n: int, g: torch.Generator) -> torch.Tensor:
    # Match the smooth images' overall spread so D must use structure, not intensity.
    return torch.randn(n, 1, 16, 16, generator=g) * 0.6


def test_discriminator_learns_smooth_vs_white_noise():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    d = WaveletDiscriminator(image_channels=1, channels=(8, 16))
    opt = torch.optim.Adam(d.parameters(), lr=5e-3, betas=(0.0, 0.99))
    for _ in range(30):
        loss = nonsat_d_loss(d(_smooth(16, g)), d(_noise(16, g)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        real_logits, fake_logits = d(_smooth(64, g)), d(_noise(64, g))
    accuracy = ((real_logits > 0).float().mean() + (fake_logits < 0).float().mean()) / 2
    assert accuracy > 0.9
