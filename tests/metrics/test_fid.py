"""FID: the Frechet distance against direct computations, and FID over the samples of each label map
(a perfect generator reads 0 whatever the number of samples)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy
from scipy import linalg

from medsynth.metrics import fid as F


def spd(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


# --------------------------------------------------------------------------------------------- FID maths


def _fid_sqrtm(mu1, s1, mu2, s2):
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(linalg.sqrtm(s1 @ s2).real))


def _fid_symmetric(mu1, s1, mu2, s2):
    """Same quantity via the symmetric form tr((S1^1/2 S2 S1^1/2)^1/2), with eigh only."""
    w, v = np.linalg.eigh(s1)
    r1 = (v * np.sqrt(w)) @ v.T
    inner = np.linalg.eigvalsh(r1 @ s2 @ r1)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(inner, 0, None)).sum())


def test_frechet_distance_matches_direct_computation():
    rng = np.random.default_rng(0)
    for _ in range(3):
        mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
        s1, s2 = spd(rng, 8), spd(rng, 8)
        ours = F.frechet_distance(mu1, s1, mu2, s2)
        assert isinstance(ours, float)
        assert ours == pytest.approx(_fid_sqrtm(mu1, s1, mu2, s2), rel=1e-6)
        assert ours == pytest.approx(_fid_symmetric(mu1, s1, mu2, s2), rel=1e-6)
        assert ours > 0


def test_frechet_distance_of_fewer_images_than_features_matches_the_matrix_square_root():
    """Covariances of 40 and 30 feature vectors in 256 dimensions are singular, as every FID of a small test
    set is: the eigenvalue route and scipy's sqrtm of the product agree."""
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(40, 256)), 1.2 * rng.normal(size=(30, 256)) + 0.1
    stats = (*F.gaussian_stats(a), *F.gaussian_stats(b))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy may warn that the product is singular
        assert F.frechet_distance(*stats) == pytest.approx(_fid_sqrtm(*stats), rel=1e-6)
    same = F.frechet_distance(*stats[:2], *stats[:2])  # fake = real: 0 up to round-off, never below
    assert 0.0 <= same <= 1e-7 * np.trace(stats[1])


def test_frechet_distance_zero_for_identical_stats_and_symmetric():
    rng = np.random.default_rng(1)
    mu, s = rng.normal(size=8), spd(rng, 8)
    assert abs(F.frechet_distance(mu, s, mu, s)) < 1e-6
    mu2, s2 = rng.normal(size=8), spd(rng, 8)
    assert F.frechet_distance(mu, s, mu2, s2) == pytest.approx(F.frechet_distance(mu2, s2, mu, s), rel=1e-9)


def test_frechet_distance_grows_as_means_move_apart():
    rng = np.random.default_rng(2)
    mu, s1, s2 = rng.normal(size=8), spd(rng, 8), spd(rng, 8)
    v = rng.normal(size=8)
    steps = [0.0, 0.5, 1.0, 2.0, 4.0]
    values = [F.frechet_distance(mu, s1, mu + t * v, s2) for t in steps]
    assert all(a < b for a, b in zip(values, values[1:]))
    # The covariance part does not depend on the means: the growth is exactly t^2 ||v||^2.
    for t, value in zip(steps, values):
        assert value - values[0] == pytest.approx(t * t * (v @ v), rel=1e-6, abs=1e-9)


def test_frechet_distance_of_singular_covariances_is_finite():
    """Degenerate statistics (e.g. a constant feature set) still give the mean term, not NaN."""
    rng = np.random.default_rng(3)
    mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
    zero = np.zeros((8, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy may warn that the matrix is singular
        value = F.frechet_distance(mu1, zero, mu2, zero)
    assert value == pytest.approx((mu1 - mu2) @ (mu1 - mu2), rel=1e-6)


@pytest.mark.skipif(tuple(int(p) for p in scipy.__version__.split(".")[:2]) < (1, 16),
                    reason="scipy < 1.16 has not deprecated sqrtm's disp argument")
def test_frechet_distance_uses_no_deprecated_scipy_arguments():
    rng = np.random.default_rng(4)
    mu, s = rng.normal(size=4), spd(rng, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        F.frechet_distance(mu, s, mu, s)


def test_gaussian_stats_are_mean_and_sample_covariance():
    feats = np.random.default_rng(5).normal(size=(30, 6))
    mu, sigma = F.gaussian_stats(feats)
    np.testing.assert_allclose(mu, feats.mean(0))
    centred = feats - feats.mean(0)
    np.testing.assert_allclose(sigma, centred.T @ centred / (len(feats) - 1))


@pytest.mark.parametrize("n", [0, 1])
def test_frechet_distance_of_fewer_than_two_images_is_nan_not_an_error(n):
    """One generated image has no covariance (np.cov gives NaN, eigh raised); a NaN must never read as 0."""
    rng = np.random.default_rng(2)
    real = F.gaussian_stats(rng.normal(size=(30, 6)))
    assert np.isnan(F.frechet_distance(*F.gaussian_stats(rng.normal(loc=100.0, size=(n, 6))), *real))
    with_nan = rng.normal(size=(30, 6))
    with_nan[0, 0] = np.nan
    assert np.isnan(F.frechet_distance(*F.gaussian_stats(with_nan), *real))


# --------------------------------------------------------------------------------------------- samples per label map


def test_sample_draws_number_each_block_by_the_samples_of_its_source_before_it():
    blocks = [("a", 2), ("a", 2), ("b", 1), ("b", 1), ("a", 0), ("c", 3)]
    np.testing.assert_array_equal(F.sample_draws(blocks), [0, 0, 1, 1, 0, 1, 0, 0, 0])  # a's third: no row
    assert F.sample_draws([]).shape == (0,)


@pytest.mark.parametrize("samples", [1, 2, 5])
def test_a_perfect_generator_reads_zero_whatever_the_samples_per_label_map(samples):
    """K copies of each real feature vector: scored at once their covariance is K(N-1)/(KN-1) of the real one
    (FID > 0, falling as K grows); a draw at a time every draw is the real set."""
    rng = np.random.default_rng(7)
    real = rng.normal(size=(12, 6)) * np.arange(1, 7)
    mu, sigma = F.gaussian_stats(real)
    fake = np.tile(real, (samples, 1))  # draw k: rows k*12 .. k*12+11, as sample_draws numbers them
    draws = F.sample_draws([(f"case{i}", 1) for _ in range(samples) for i in range(12)])
    out = F.fid_over_draws(fake, draws, mu, sigma)
    assert out["fid"] == pytest.approx(0.0, abs=1e-9 * np.trace(sigma))
    assert out["fid_draws"] == samples and out["fid_rows"] == 12
    assert np.isnan(out["fid_std"]) if samples == 1 else out["fid_std"] == pytest.approx(0.0, abs=1e-9)
    at_once = F.frechet_distance(*F.gaussian_stats(fake), mu, sigma)
    assert (at_once > 1e-4 * np.trace(sigma)) == (samples > 1)
    shifted = F.fid_over_draws(fake + 1.0, draws, mu, sigma)["fid"]  # every mean off by 1: FID 6
    assert shifted == pytest.approx(6.0, rel=1e-6)


def test_fid_over_draws_is_the_mean_and_spread_of_each_draws_fid():
    rng = np.random.default_rng(8)
    real, fake = rng.normal(size=(40, 5)), rng.normal(loc=0.3, size=(60, 5))
    mu, sigma = F.gaussian_stats(real)
    draws = np.repeat([0, 1, 2], [20, 20, 20])
    each = [F.frechet_distance(*F.gaussian_stats(fake[draws == d]), mu, sigma) for d in range(3)]
    out = F.fid_over_draws(fake, draws, mu, sigma)
    assert out["fid"] == pytest.approx(np.mean(each)) and out["fid_std"] == pytest.approx(np.std(each, ddof=1))
    assert F.fid_over_draws(fake, None, mu, sigma)["fid"] == pytest.approx(
        F.frechet_distance(*F.gaussian_stats(fake), mu, sigma))
    with pytest.raises(ValueError, match="3 draws for 60"):
        F.fid_over_draws(fake, draws[:3], mu, sigma)


def test_fid_note_says_how_it_was_averaged_and_whether_it_reads_high():
    assert F.fid_note({"fid_draws": 1, "fid_rows": 3000}, 3000, "slices") == ""
    assert F.fid_note({"fid_draws": 1, "fid_rows": 30}, 3000, "slices") == F.few_for_fid(30, 3000, "slices")
    note = F.fid_note({"fid_draws": 2, "fid_rows": 2100}, 2500, "planes")
    assert note.startswith("mean of 2 FIDs, one per sample of each label map (2100 planes") and "reads high" not in note


def test_the_real_sides_root_is_computed_once_for_every_draw_and_changes_nothing(monkeypatch):
    rng = np.random.default_rng(3)
    real = rng.normal(size=(40, 6))
    fake = rng.normal(0.2, 1.1, size=(60, 6))
    draws = np.repeat(np.arange(3), 20)
    mu, sigma = F.gaussian_stats(real)
    expected = [_fid_sqrtm(*F.gaussian_stats(fake[draws == d]), mu, sigma) for d in range(3)]
    original, roots = F.psd_root, []
    monkeypatch.setattr(F, "psd_root", lambda s: roots.append(s) or original(s))
    scores = F.fid_over_draws(fake, draws, mu, sigma)
    assert len(roots) == 1 and roots[0] is sigma  # one root, the real side's: not one per draw
    assert scores["fid"] == pytest.approx(np.mean(expected), rel=1e-6)
    given = F.frechet_distance(*F.gaussian_stats(fake), mu, sigma, original(sigma))
    assert given == pytest.approx(F.frechet_distance(*F.gaussian_stats(fake), mu, sigma), rel=1e-9)
