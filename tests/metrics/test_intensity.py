"""Per-class intensity (medsynth.metrics.intensity): a perfect generator scores perfectly, a drift is flagged."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medsynth.data.intensity import IntensityMap
from medsynth.metrics.intensity import (COLUMNS, QUANTILE_KEYS, ClassIntensityCounts, class_intensity_table,
                                        class_stats, flagged)

NAMES = ["background", "body", "liver", "spleen", "kidney"]
HU = {0: -1000.0, 1: -50.0, 2: 60.0, 3: 45.0, 4: 150.0}  # kidney (4) is drawn in no image


def ct_slices(n: int = 6, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """CT-like slices in HU: a body with liver and spleen, each class its own HU and texture."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((n, size, size), np.uint8)
    labels[:, 4:28, 4:28] = 1
    labels[:, 8:18, 6:16] = 2
    labels[:, 10:20, 18:26] = 3
    images = np.vectorize(HU.get)(labels) + rng.normal(0, 10, labels.shape) * (labels > 0)
    return images.astype(np.float32), labels


def test_a_perfect_generator_scores_perfectly() -> None:
    images, labels = ct_slices()
    rows = class_intensity_table(images, labels, images, labels, NAMES)
    assert [r["class"] for r in rows] == NAMES and all(set(r) == set(COLUMNS) for r in rows)
    for r in rows[:4]:
        assert r["mean_abs_error"] == 0.0, r["class"]
        assert r["voxels_real"] == r["voxels_generated"] > 0
        assert all(r[f"{q}_real"] == r[f"{q}_generated"] for q in QUANTILE_KEYS)
    assert [r["std_ratio"] for r in rows[1:4]] == [1.0, 1.0, 1.0]
    assert math.isnan(rows[0]["std_ratio"])  # background is exactly -1000 HU: no texture to compare
    assert flagged(rows) == []


def test_a_perfect_generator_of_a_skewed_class_is_not_flagged() -> None:
    """A bladder of urine (~10 HU) with 4 % layered excreted contrast (~2000 HU): its real mean (~90 HU) lies
    above its own 95th percentile, so a mean-based flag marked a perfect generator."""
    rng = np.random.default_rng(0)
    n = 20000
    hu = np.where(rng.random(n) < 0.04, rng.normal(2000, 100, n), rng.normal(10, 8, n)).astype(np.float32)
    images = np.concatenate([np.full(n, -1000, np.float32), hu]).reshape(1, 2, n)
    labels = np.concatenate([np.zeros(n, np.uint8), np.ones(n, np.uint8)]).reshape(1, 2, n)
    rows = class_intensity_table(images, labels, images.copy(), labels, ["background", "urinary_bladder"])
    assert rows[1]["mean_real"] > rows[1]["p95_real"]  # the case that tripped the mean
    assert flagged(rows) == [] and rows[1]["mean_abs_error"] == 0.0


def test_one_organ_painted_300_hu_too_bright_is_flagged() -> None:
    real, labels = ct_slices(seed=0)
    fake, _ = ct_slices(seed=1)  # another draw of the same anatomy: noise differs, organ HU do not
    fake[labels == 2] += 300.0
    rows = {r["class"]: r for r in class_intensity_table(fake, labels, real, labels, NAMES)}
    assert flagged(rows.values()) == ["liver"]
    assert rows["liver"]["mean_abs_error"] == pytest.approx(300.0, abs=2.0)  # noise means differ by < 1 HU
    assert rows["liver"]["std_ratio"] == pytest.approx(1.0, abs=0.1)  # a shift keeps the texture
    assert rows["spleen"]["mean_abs_error"] < 2.0 and not rows["spleen"]["outside_real_range"]


def test_absent_classes_are_nan_and_never_flagged() -> None:
    real, labels = ct_slices()
    fake_labels = labels.copy()
    fake_labels[fake_labels == 3] = 1  # spleen only in the real images
    rows = {r["class"]: r for r in class_intensity_table(real, fake_labels, real, labels, NAMES)}
    kidney, spleen = rows["kidney"], rows["spleen"]
    assert kidney["voxels_real"] == kidney["voxels_generated"] == 0
    assert all(math.isnan(kidney[k]) for k in ("mean_real", "mean_generated", "mean_abs_error", "std_ratio",
                                               "p05_real", "p95_generated"))
    assert spleen["voxels_generated"] == 0 < spleen["voxels_real"] and math.isnan(spleen["mean_abs_error"])
    assert not kidney["outside_real_range"] and not spleen["outside_real_range"]
    # The spleen's pixels, given to the body, pull its mean up by ~95 HU: the body's error, not a flag by itself.
    assert rows["body"]["mean_abs_error"] > 10


def test_percentiles_are_numpys() -> None:
    rng = np.random.default_rng(3)
    images = rng.integers(-5, 5, (4, 9, 7)).astype(np.float32)  # many ties
    labels = rng.integers(0, 3, images.shape)
    stats = class_stats(images, labels, 3)
    for c, s in enumerate(stats):
        values = images[labels == c].astype(np.float64)
        np.testing.assert_allclose([s[k] for k in QUANTILE_KEYS], np.percentile(values, [5, 25, 50, 75, 95]),
                                   rtol=0, atol=1e-12)
        assert s["n"] == values.size and s["mean"] == pytest.approx(values.mean()) \
            and s["std"] == pytest.approx(values.std())


def test_counts_over_many_batches_equal_the_statistics_of_all_of_them() -> None:
    """Unit images in float16 (as stored), each batch with its own curve into HU: the same as converting first."""
    rng = np.random.default_rng(4)
    curves = [IntensityMap.window(-1000, 1000), IntensityMap.ct((-1000, 1000), (-150, 250), 0.6),
              IntensityMap.window(-1000, 1000)]  # equal to the first: shares its counters
    counts, physical, labels_all = ClassIntensityCounts(4), [], []
    for curve in curves:
        unit = rng.uniform(-1, 1, (3, 16, 16)).astype(np.float16)
        labels = rng.integers(0, 3, unit.shape)  # class 3 never occurs
        counts.add(unit, labels, curve)
        physical.append(curve.to_physical(unit.astype(np.float32)))
        labels_all.append(labels)
    expected = class_stats(np.concatenate(physical), np.concatenate(labels_all), 4)
    got = counts.stats()
    for g, e in zip(got[:3], expected[:3]):
        assert g["n"] == e["n"]
        for k in ("mean", "std", *QUANTILE_KEYS):
            assert g[k] == pytest.approx(e[k], rel=1e-9, abs=1e-6), k
    assert got[3]["n"] == 0 and math.isnan(got[3]["mean"])
    unconverted = ClassIntensityCounts(2)
    unconverted.add(np.array([[-0.0, 0.0, 0.5]], np.float16), np.array([[1, 1, 1]]))  # no curve: stored units
    assert unconverted.stats()[1]["p50"] == 0.0 and unconverted.stats()[1]["mean"] == pytest.approx(1 / 6)


def test_a_class_id_outside_the_table_names_the_file() -> None:
    with pytest.raises(ValueError, match=r"case7/samples.npz: class ids 0..5 outside the label table's 0..3"):
        ClassIntensityCounts(4).add(np.zeros((2, 3)), np.array([[0, 1, 5], [2, 3, 0]]), source="case7/samples.npz")


def test_a_class_without_real_spread_is_not_flagged_for_noise() -> None:
    """CT air is -1000 everywhere: a generated -996 is noise, not a wrong organ HU."""
    from medsynth.metrics.intensity import class_intensity_table

    labels = np.zeros((2, 8, 8), np.uint8)
    labels[:, 2:6, 2:6] = 1
    rng = np.random.default_rng(0)
    real = np.where(labels == 0, -1000.0, 60.0 + rng.normal(0, 10, labels.shape))
    fake = np.where(labels == 0, -996.0, 60.0 + rng.normal(0, 10, labels.shape))
    rows = class_intensity_table(fake, labels, real, labels, ["background", "liver"])
    assert not rows[0]["outside_real_range"] and rows[0]["mean_abs_error"] == pytest.approx(4.0)
    fake[labels == 1] += 300
    rows = class_intensity_table(fake, labels, real, labels, ["background", "liver"])
    assert rows[1]["outside_real_range"] and not rows[0]["outside_real_range"]
