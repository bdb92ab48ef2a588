import numpy as np
import pytest
import torch
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity

from medsynth.metrics.image import (IntensityHistogram, diversity, intensity_w1, paired_metrics, psnr, rmse,
                                   sample_diversity, ssim)


@pytest.fixture
def pair():
    rng = np.random.default_rng(0)
    real = np.clip(rng.normal(0, 0.4, (3, 40, 48)), -1, 1).astype(np.float32)
    fake = np.clip(real + rng.normal(0, 0.2, real.shape), -1, 1).astype(np.float32)
    return fake, real


def t(a):
    return torch.from_numpy(a)[:, None]


def test_ssim_matches_scikit_image_with_explicit_range(pair):
    fake, real = pair
    ours = ssim(t(fake), t(real), data_range=2.0).numpy()
    ref = [
        structural_similarity(f, r, data_range=2.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
        for f, r in zip(fake, real)
    ]
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5)


def test_psnr_and_rmse_match_scikit_image(pair):
    fake, real = pair
    np.testing.assert_allclose(
        psnr(t(fake), t(real), 2.0).numpy(),
        [peak_signal_noise_ratio(r, f, data_range=2.0) for f, r in zip(fake, real)],
        rtol=1e-5,
    )
    np.testing.assert_allclose(
        rmse(t(fake), t(real)).numpy(), [np.sqrt(mean_squared_error(r, f)) for f, r in zip(fake, real)], rtol=1e-5
    )


def test_identical_images_are_perfect(pair):
    _, real = pair
    m = paired_metrics(t(real), t(real))
    assert torch.allclose(m["ssim"], torch.ones(3))
    assert torch.all(m["rmse"] == 0)
    assert torch.all(m["psnr"] > 100)


def test_data_range_matters(pair):
    fake, real = pair
    assert not torch.allclose(ssim(t(fake), t(real), 2.0), ssim(t(fake), t(real), 255.0))


def test_body_variants_score_only_inside_the_mask(pair):
    from medsynth.metrics.image import paired_metrics

    fake, real = pair
    body = torch.zeros(3, 1, 40, 48)
    body[:, :, 10:30, 12:36] = 1
    f, r = t(fake), t(real)
    m = paired_metrics(f, r, body=body)
    inside = (body > 0).expand_as(f)
    expected_rmse = torch.sqrt(((f - r) ** 2 * inside).sum(dim=(1, 2, 3)) / inside.sum(dim=(1, 2, 3)))
    torch.testing.assert_close(m["rmse_body"], expected_rmse.float())
    # Changing pixels outside the body leaves the body scores unchanged and moves the whole-image ones.
    f2 = f.clone()
    f2[~inside] = 1.0
    m2 = paired_metrics(f2, r, body=body)
    torch.testing.assert_close(m2["rmse_body"], m["rmse_body"])
    torch.testing.assert_close(m2["psnr_body"], m["psnr_body"])
    assert not torch.allclose(m2["rmse"], m["rmse"])
    # SSIM inside: the window is restricted to body pixels, so nothing outside counts, in either image.
    r2 = r.clone()
    r2[~inside] = -1.0
    torch.testing.assert_close(paired_metrics(f2, r2, body=body)["ssim_body"], m["ssim_body"])
    assert not torch.allclose(paired_metrics(f2, r2, body=body)["ssim"], m["ssim"])
    # A perfect generator scores 1 inside the body; noise there lowers it.
    assert torch.allclose(paired_metrics(r, r, body=body)["ssim_body"], torch.ones(3))
    assert (m["ssim_body"] < 0.9).all()


@pytest.mark.parametrize("k", [2, 4, 8])
def test_diversity_reads_the_noise_spread_whatever_the_number_of_samples(k: int) -> None:
    """Samples = one image + noise of std 0.2 inside the body: every K must read 0.2 (the
    divisor-K std of 2 samples reads 0.14, so the demo's 2 and the bench's 4 would disagree)."""
    g = torch.Generator().manual_seed(k)
    base = torch.rand(3, 1, 32, 32, generator=g) * 2 - 1
    body = torch.zeros(3, 1, 32, 32)
    body[..., 4:28, 4:28] = 1
    noise = torch.randn(k, 3, 1, 32, 32, generator=g) * 0.2
    samples = base + noise * body + 5 * noise * (1 - body)  # outside the body: not counted
    assert diversity(*sample_diversity(samples, body)) == pytest.approx(0.2, rel=0.03)
    assert diversity(*sample_diversity(base.expand(k, -1, -1, -1, -1), body)) == 0.0  # noise that does nothing


def test_intensity_w1_of_a_set_added_in_chunks_is_that_of_the_whole_set() -> None:
    """The histogram's counts are integers: a set read a case at a time gives the whole set's W1, to the bit."""
    g = torch.Generator().manual_seed(0)
    fake, real = torch.rand(10, 1, 16, 16, generator=g) * 2 - 1, torch.rand(7, 1, 16, 16, generator=g) ** 2 * 2 - 1
    fake_body, real_body = (torch.rand(10, 1, 16, 16, generator=g) > 0.3).float(), torch.ones(7, 1, 16, 16)
    generated, reference = IntensityHistogram(), IntensityHistogram()
    for i in range(0, 10, 3):
        generated.add(fake[i:i + 3].half(), fake_body[i:i + 3])  # float16 as stored: the same values
    for i in range(7):
        reference.add(real[i:i + 1], real_body[i:i + 1])
    whole = intensity_w1(fake.half().float(), fake_body, real, real_body)
    assert generated.w1(reference) == whole > 0.05
    assert intensity_w1(real, real_body, real, real_body) == 0.0  # a perfect generator


def test_nan_pixels_make_w1_and_body_dice_na_not_near_perfect() -> None:
    """A broken generator giving NaN on part of the body: histc skipped those pixels (W1 read 0.02 with 75 %
    of them NaN) and body Dice counted them as air."""
    from medsynth.metrics.image import body_dice, intensity_w1

    torch.manual_seed(0)
    real = torch.rand(4, 1, 16, 16) * 2 - 1
    body = torch.ones(4, 1, 16, 16)
    fake = real.clone()
    fake[:2, :, :12] = float("nan")
    assert np.isnan(intensity_w1(fake, body, real, body))
    assert intensity_w1(real, body, real, body) == 0.0  # a perfect generator still scores perfectly
    dice = body_dice(fake, body)
    assert torch.isnan(dice[:2]).all() and torch.equal(dice[2:], body_dice(real, body)[2:])
