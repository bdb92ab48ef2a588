"""Through-plane consistency: real volumes score perfectly, a stack of unrelated slices badly."""

import math

import numpy as np
import pytest

from medsynth.data.phantom import make_case
from medsynth.metrics import through_plane
from medsynth.metrics.through_plane import Differences, NeighbourStats, resample_run, runs, scores, volume_stats


def _phantom_volumes(indices=(0, 1)) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Phantom CTs as axial slices (n, H, W) in about [-1, 1], their body masks and z."""
    out = []
    for i in indices:
        case = make_case(i, seed=0, shape=(64, 64, 16), spacing=(6.0, 6.0, 3.0))
        images = np.clip(np.moveaxis(case.ct, 2, 0) / 1000.0, -1, 1).astype(np.float32)
        masks = np.moveaxis(case.label, 2, 0) > 0
        out.append((images, masks, np.arange(images.shape[0])))
    return out


def test_real_volumes_score_perfectly() -> None:
    real = volume_stats(_phantom_volumes())
    s = scores(real, real)
    assert s["ratio"] == pytest.approx(1.0) and s["w1"] == pytest.approx(0.0, abs=1e-9)
    assert s["ssim_ratio"] == pytest.approx(1.0) and s["pairs"] == 2 * 15


def test_shuffled_slices_and_unrelated_noise_score_badly() -> None:
    volumes = _phantom_volumes()
    real = volume_stats(volumes)
    g = np.random.default_rng(0)
    shuffled = volume_stats([(im[g.permutation(len(im))], m, z) for im, m, z in volumes])
    s = scores(shuffled, real)
    assert s["ratio"] > 2 and s["w1"] > 0.02 and s["ssim_ratio"] < 0.9
    # Each slice with its own noise of the phantom's texture size: in-plane alike, different along z.
    noisy = volume_stats([(im + 0.05 * g.standard_normal(im.shape).astype(np.float32), m, z) for im, m, z in volumes])
    assert 1.0 < scores(noisy, real)["ratio"]  # the smoothing damps per-voxel noise, it does not remove it
    # Another phantom patient's real volume is as smooth along z as the reference: close to 1.
    other = scores(volume_stats(_phantom_volumes((2, 3))), real)
    assert 0.8 < other["ratio"] < 1.25 and other["w1"] < 0.005


def test_real_neighbours_that_never_differ_give_a_nan_ratio_not_an_error() -> None:
    """A real test volume of one image repeated along z: its mean difference is 0, so the ratio has no scale
    (it raised ZeroDivisionError); W1 and the SSIM ratio are still computed."""
    masks = np.zeros((4, 32, 32), bool)
    masks[:, 4:28, 4:28] = True
    real = np.where(masks, 0.1, -1.0).astype(np.float32)
    generated = real + np.random.default_rng(0).normal(0, 0.05, real.shape).astype(np.float32)
    g, r = NeighbourStats(), NeighbourStats()
    g.add(generated, masks, np.arange(4))
    r.add(real, masks, np.arange(4))
    s = scores(g, r)
    assert s["mean_real"] == 0.0 and s["mean_generated"] > 0 and math.isnan(s["ratio"])
    assert s["w1"] > 0 and np.isfinite(s["ssim_ratio"]) and s["pairs"] == 3


def test_only_slices_of_one_run_of_consecutive_z_are_compared() -> None:
    assert [r.tolist() for r in runs(np.array([3, 4, 5, 8, 9]))] == [[0, 1, 2], [3, 4]]
    with pytest.raises(ValueError, match="increasing z order"):
        runs(np.array([4, 3]))
    stats = NeighbourStats()
    stats.add(np.zeros((2, 8, 8), np.float32), np.ones((2, 8, 8), bool), np.array([0, 2]))
    s = scores(stats, stats)
    assert math.isnan(s["ratio"]) and s["pairs"] == 0


def test_a_run_is_resampled_linearly_to_the_target_spacing_with_the_body_of_both_slices() -> None:
    images = np.arange(5, dtype=np.float32)[:, None, None] * np.ones((5, 4, 4), np.float32)  # value = index
    masks = np.ones((5, 4, 4), bool)
    masks[3, 0, 0] = False
    out, body = resample_run(images, masks, 3.0, 6.0)  # 12 mm: slices 0, 2, 4
    np.testing.assert_array_equal(out[:, 0, 0], [0, 2, 4])
    assert body.all()  # stored slices keep their own body
    out, body = resample_run(images, masks, 3.0, 5.0)  # at 0, 5, 10 mm: slices 0, 1 2/3, 3 1/3
    np.testing.assert_allclose(out[:, 0, 0], [0, 5 / 3, 10 / 3], rtol=1e-6)
    assert body[2, 0, 0] == np.False_ and body[1, 0, 0] and body[2, 1, 1]  # between 3 and 4: both bodies
    out, _ = resample_run(images, masks, 3.0, 3.0)
    np.testing.assert_array_equal(out, images)  # its own spacing: unchanged
    assert len(resample_run(images[:2], masks[:2], 3.0, 6.0)[0]) == 1  # 3 mm of run: no pair 6 mm apart


def _exact_w1(a: np.ndarray, b: np.ndarray) -> float:
    """W1 of two samples by the area between their empirical CDFs, evaluated at every value (no binning)."""
    grid = np.sort(np.concatenate([a, b]).astype(np.float64))
    fa = np.searchsorted(np.sort(a), grid[:-1], side="right") / a.size
    fb = np.searchsorted(np.sort(b), grid[:-1], side="right") / b.size
    return float(np.sum(np.abs(fa - fb) * np.diff(grid)))


@pytest.mark.parametrize("kind", ["spread", "ties", "zeros", "beyond"])
def test_differences_give_w1_within_a_bin_width_and_the_exact_mean(kind: str) -> None:
    """The pooled histogram answers as the values would, whatever the chunks they came in; the same values
    score W1 0 exactly (a perfect generator)."""
    g = np.random.default_rng(len(kind))
    a = np.abs(g.normal(0.02, 0.03, 20000)).astype(np.float32)
    b = np.abs(g.normal(0.03, 0.05, 15000)).astype(np.float32)
    if kind == "ties":
        a, b = np.round(a, 2), np.round(b, 2)
    if kind == "zeros":  # flat regions: many differences exactly 0
        a[::2] = 0
    if kind == "beyond":  # beyond the histogram's range: counted in its last bin, the mean still exact
        b[:10] = 2.5
    da, db = Differences(), Differences()
    for part in np.array_split(a, 7):
        da.add(part)
    db.add(b)
    width = through_plane.DIFFERENCE_RANGE / through_plane.DIFFERENCE_BINS
    exact = _exact_w1(np.minimum(a, 2), np.minimum(b, 2))
    assert abs(da.w1(db) - exact) <= width and exact > 10 * width
    assert da.mean() == pytest.approx(float(a.astype(np.float64).mean()), rel=1e-12)
    assert db.mean() == pytest.approx(float(b.astype(np.float64).mean()), rel=1e-12)
    same = Differences()
    same.add(a)
    assert da.w1(same) == 0.0 and len(da) == a.size


def test_differences_hold_fixed_memory_and_nan_is_na() -> None:
    """Every difference of a test set counts, in a histogram of fixed size (the values were 7-14 GB for AutoPET,
    spilled to $TMPDIR); a NaN difference makes mean and W1 NA rather than their values without it."""
    d = Differences()
    for _ in range(3):
        d.add(np.random.default_rng(0).random(100000, np.float32))
    assert d.counts.nbytes == 8 * through_plane.DIFFERENCE_BINS and len(d) == 300000
    other = Differences()
    other.add(np.array([0.1, np.nan], np.float32))
    assert math.isnan(other.mean()) and math.isnan(d.w1(other)) and math.isnan(Differences().w1(d))
