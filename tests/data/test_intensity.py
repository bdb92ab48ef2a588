"""The intensity curve between HU (or MR units) and [-1, 1]: exact round trips, the soft-tissue band."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medsynth.data.intensity import IntensityMap, piecewise_linear
from medsynth.data.phantom import make_case
from medsynth.data.preprocess import PreprocessSettings, preprocess_case
from medsynth.inference.generate_cases import assemble_volume
from medsynth.io.nifti import load_volume, save_volume
from medsynth.data.labels import LabelTable
from medsynth.data.phantom import PHANTOM_LABELS
from medsynth.data.slicing import SliceSettings, slice_case


def test_linear_window_maps_ends_and_clips() -> None:
    m = IntensityMap.window(-1000, 1000)
    np.testing.assert_allclose(m.to_unit(np.array([-2000, -1000, 0, 500, 1000, 3000])),
                               [-1, -1, 0, 0.5, 1, 1], atol=1e-6)


@pytest.mark.parametrize("curve", [IntensityMap.window(0, 1000), IntensityMap.ct((-1024, 1500), (-150, 250), 0.6)])
def test_the_float32_curve_is_numpys_interpolation(curve: IntensityMap) -> None:
    """Generation maps every voxel of every sample through the curve: in float32, as np.interp would."""
    rng = np.random.default_rng(0)
    unit = np.concatenate([rng.uniform(-1.2, 1.2, 10_000), curve.unit, [np.nan]]).astype(np.float32)
    physical = np.concatenate([rng.uniform(curve.lo - 300, curve.hi + 300, 10_000), curve.physical])
    for x, xp, fp in ((unit, curve.unit, curve.physical), (physical, curve.physical, curve.unit)):
        got = piecewise_linear(x, xp, fp)
        assert got.dtype == np.float32 and got.shape == x.shape
        np.testing.assert_allclose(got, np.interp(x.astype(np.float32), xp, fp), rtol=0, atol=1e-4 * fp[-1])
    ends = curve.to_physical(np.array([-5.0, -1.0, 1.0, 5.0]))
    assert list(ends) == [curve.lo, curve.lo, curve.hi, curve.hi]  # exact: the background value is compared


def test_soft_window_stretches_soft_tissue_and_round_trips_every_hu() -> None:
    m = IntensityMap.ct((-1000, 1000), (-150, 250), 0.6)
    hu = np.arange(-1000, 1001, dtype=np.float32)
    np.testing.assert_allclose(m.to_physical(m.to_unit(hu)), hu, atol=0.02)
    # Liver (60) and spleen (45): 15 HU apart are 0.015 units in a linear +-1000 window, 3x more here.
    gap = float(np.diff(m.to_unit(np.array([45.0, 60.0])))[0])
    assert gap == pytest.approx(15 * 1.2 / 400, rel=1e-4)
    assert gap > 2.5 * float(np.diff(IntensityMap.window(-1000, 1000).to_unit(np.array([45.0, 60.0])))[0])
    # Both outer parts share one slope, and the band gets 60 % of the range.
    u = m.to_unit(np.array([-1000.0, -150.0, 250.0, 1000.0]))
    assert u[2] - u[1] == pytest.approx(1.2)
    assert (u[1] - u[0]) / 850 == pytest.approx((u[3] - u[2]) / 750, rel=1e-6)


@pytest.mark.parametrize("soft, share", [((-1200, 0), 0.6), ((-100, 1000), 0.6), ((100, -100), 0.6),
                                         ((-150, 250), 1.0), ((-150, 250), 0.0)])
def test_bad_soft_window_is_refused_with_the_key(soft, share) -> None:
    with pytest.raises(ValueError, match="ct_soft"):
        IntensityMap.ct((-1000, 1000), soft, share)


def test_meta_round_trip_and_files_from_before_knots() -> None:
    m = IntensityMap.ct((-1024, 1500), (-200, 300), 0.5)
    assert IntensityMap.from_meta(m.to_meta()) == m
    assert IntensityMap.from_meta({"lo": -1000.0, "hi": 1000.0, "background": -1024}) == IntensityMap.window(-1000,
                                                                                                             1000)


def test_preprocessing_and_generation_use_one_curve(tmp_path: Path) -> None:
    """A CT through preprocessing with a soft window, written back as a 'generated' volume, keeps its HU."""
    case = make_case(0, seed=0, shape=(64, 64, 8), spacing=(6.0, 6.0, 6.0))
    img, lab = save_volume(tmp_path / "ct.nii.gz", case.ct, case.affine), save_volume(
        tmp_path / "label.nii.gz", case.label, case.affine)
    table = LabelTable.from_config([{"name": n, "values": [v]} for v, n in PHANTOM_LABELS.items()])
    settings = PreprocessSettings("CT", None, ct_soft_window=(-150.0, 250.0), ct_soft_share=0.6)
    meta = preprocess_case("c", img, lab, tmp_path / "out", table, settings)
    assert meta["intensity"]["knots"] == [[-1000.0, -150.0, 250.0, 1000.0], [-1.0, -0.575, 0.625, 1.0]]
    image, mask = (load_volume(tmp_path / "out" / f"{n}.nii.gz").array for n in ("image", "mask"))
    back = assemble_volume(image.astype(np.float32), mask > 0, meta)
    inside = (mask > 0) & (np.abs(case.ct) < 999)  # the phantom is on a RAS grid: source grid = preprocessed grid
    np.testing.assert_allclose(back[inside], case.ct[inside], atol=0.6)  # float16 slices store
