"""KID (medsynth.metrics.kid): the unbiased estimators against direct computations, independent sets and
pairs of a generated row with the real row of its label map."""

from __future__ import annotations

import numpy as np
import pytest

from medsynth.metrics.kid import kernel_inception_distance, partners


def _mmd2_unbiased(x, y):
    """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, by explicit loops."""
    d = x.shape[1]
    k = lambda a, b: (a @ b / d + 1) ** 3  # noqa: E731
    m, n = len(x), len(y)
    kxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kyy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kxy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return kxx + kyy - 2 * kxy


def test_kid_is_the_unbiased_polynomial_mmd():
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(12, 4)), rng.normal(0.3, 1.2, size=(12, 4))
    # subset size >= both sets: every subset is the whole set (permuted), so each value is the full MMD^2.
    mean, std = kernel_inception_distance(a, b, subsets=3, subset_size=50, seed=0)
    assert mean == pytest.approx(_mmd2_unbiased(a, b), rel=1e-9)
    assert std == pytest.approx(0.0, abs=1e-9)


def test_kid_near_zero_for_one_distribution_and_can_be_negative():
    means, stds = [], []
    for seed in range(8):
        rng = np.random.default_rng(100 + seed)
        a, b = rng.normal(size=(500, 16)), rng.normal(size=(500, 16))
        mean, std = kernel_inception_distance(a, b, subsets=20, subset_size=100, seed=seed)
        assert np.isfinite(mean) and np.isfinite(std) and std > 0
        assert abs(mean) < 2 * std  # within the spread of its own subsets
        means.append(mean)
        stds.append(std)
    assert min(means) < 0  # unbiased: no positive floor
    assert abs(np.mean(means)) < 0.02


def test_kid_clearly_positive_for_shifted_distribution():
    rng = np.random.default_rng(7)
    a, b = rng.normal(size=(500, 16)), rng.normal(size=(500, 16)) + 0.5
    mean, std = kernel_inception_distance(a, b, subsets=20, subset_size=100, seed=0)
    assert np.isfinite(std) and std > 0
    assert mean > 0.3 and mean > 5 * std


def test_kid_is_reproducible_for_a_seed():
    rng = np.random.default_rng(8)
    a, b = rng.normal(size=(200, 8)), rng.normal(size=(150, 8))
    first = kernel_inception_distance(a, b, subsets=5, subset_size=50, seed=3)
    assert kernel_inception_distance(a, b, subsets=5, subset_size=50, seed=3) == first
    assert kernel_inception_distance(a, b, subsets=5, subset_size=50, seed=4) != first


def _mmd2_paired(x, y):
    """MMD^2_u over pairs (x_i, y_i) (Gretton et al. 2012), by explicit loops."""
    d = x.shape[1]
    k = lambda a, b: (a @ b / d + 1) ** 3  # noqa: E731
    m = len(x)
    return sum(k(x[i], x[j]) + k(y[i], y[j]) - k(x[i], y[j]) - k(x[j], y[i])
               for i in range(m) for j in range(m) if i != j) / (m * (m - 1))


def _features(rng, n, shift=0.0):
    """Non-negative, correlated feature vectors, as Inception's pool3 gives (the shift moves their mix)."""
    return np.abs(rng.normal(0.3 + shift, 0.3, (n, 8)) @ rng.normal(0, 0.2, (8, 32))) + 0.1 * rng.random((n, 32))


def test_paired_kid_is_the_u_statistic_over_pairs():
    rng = np.random.default_rng(10)
    a, b = rng.normal(size=(12, 4)), rng.normal(0.3, 1.2, size=(12, 4))
    partner = rng.permutation(12)  # a[i] generated from b[partner[i]]
    mean, std = kernel_inception_distance(a, b, subsets=3, subset_size=50, seed=0, partner=partner)
    order = np.argsort(partner)
    assert mean == pytest.approx(_mmd2_paired(a[order], b), rel=1e-9)
    assert std == pytest.approx(0.0, abs=1e-9)  # every draw holds every pair


@pytest.mark.parametrize("samples", [1, 2, 4])
def test_kid_of_a_perfect_generator_is_zero_paired(samples):
    """Each label map's samples equal its real image: paired KID is 0, far below what another patient
    reads; as independent sets the matched pairs' k(x_i, y_i) pulled it well below 0."""
    rng = np.random.default_rng(11)
    real, other = _features(rng, 40), _features(rng, 40, shift=0.1)
    partner = np.repeat(np.arange(40), samples)
    swap, _ = kernel_inception_distance(np.repeat(other, samples, 0), real, subsets=20, subset_size=30,
                                          partner=partner)
    perfect, std = kernel_inception_distance(np.repeat(real, samples, 0), real, subsets=20, subset_size=30,
                                               partner=partner)
    assert swap > 0 and abs(perfect) < 1e-9 * swap and std < 1e-9 * swap
    unpaired, _ = kernel_inception_distance(np.repeat(real, samples, 0), real, subsets=20, subset_size=30)
    assert unpaired < -0.01 * swap  # the bias the pairing removes


def test_paired_kid_of_independent_draws_is_near_zero_and_of_other_distributions_positive():
    """Unbiased when the pairs share nothing: two independent halves of one distribution read ~0, within
    the spread of their subsets; another distribution reads clearly above it."""
    means, stds = [], []
    for seed in range(8):
        rng = np.random.default_rng(200 + seed)
        a, b = rng.normal(size=(500, 16)), rng.normal(size=(500, 16))
        mean, std = kernel_inception_distance(a, b, subsets=20, subset_size=100, seed=seed,
                                                partner=np.arange(500))
        assert abs(mean) < 3 * std
        means.append(mean)
        stds.append(std)
    assert min(means) < 0 < max(means) and abs(np.mean(means)) < 0.02
    rng = np.random.default_rng(7)
    a, b = rng.normal(size=(500, 16)), rng.normal(size=(500, 16)) + 0.5
    mean, std = kernel_inception_distance(a, b, subsets=20, subset_size=100, partner=np.arange(500))
    assert mean > 0.3 and mean > 5 * std


def test_paired_kid_rejects_a_pairing_outside_the_real_rows():
    rng = np.random.default_rng(12)
    a, b = rng.normal(size=(4, 3)), rng.normal(size=(3, 3))
    for partner in (np.arange(4), np.arange(3), np.array([0, 1, 2, -1])):
        with pytest.raises(ValueError, match="partner must give a row of the 3 real"):
            kernel_inception_distance(a, b, partner=partner)


def test_partners_pair_blocks_by_source_and_size_or_none():
    real = [("c0", 3), ("c1", 2)]
    np.testing.assert_array_equal(partners([("c1", 2), ("c0", 3), ("c1", 2)], real), [3, 4, 0, 1, 2, 3, 4])
    assert partners([("c0", 3), ("c2", 2)], real) is None  # generated from a label map with no real rows here
    assert partners([("c0", 2)], real) is None  # another number of rows: not the same slices
    assert partners([], real).size == 0


@pytest.mark.parametrize("na, nb", [(1, 10), (10, 1), (0, 10)])
def test_kid_with_fewer_than_two_samples_is_nan(na, nb):
    rng = np.random.default_rng(9)
    mean, std = kernel_inception_distance(rng.normal(size=(na, 4)), rng.normal(size=(nb, 4)))
    assert np.isnan(mean) and np.isnan(std)
