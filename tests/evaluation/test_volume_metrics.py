"""Volume metrics of a generated test set: a perfect generator scores perfectly, shuffled slices badly."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from medsynth.data.phantom import make_case
from medsynth.data.slicing import CaseSlices
from medsynth.evaluation.volume_metrics import (THREE_PLANE, _plane_features, _real_stacks, plane_sizes,
                                               three_plane_summary, through_plane_summary)
from medsynth.metrics import planes
from medsynth.metrics.perceptual import load_inception

META = {"spacing": [6.0, 6.0, 3.0]}


def _cases(root: Path, make_fake, indices=(0, 1), shape=(64, 64, 12)) -> tuple[list[tuple[str, Path, Path]], list[Path]]:
    """Phantom test cases as slices.npz, with samples.npz (2 samples) from ``make_fake(real images)``."""
    cases, files = [], []
    for i in indices:
        case = make_case(i, seed=0, shape=shape, spacing=(6.0, 6.0, 3.0))
        images = np.clip(np.moveaxis(case.ct, 2, 0) / 1000.0, -1, 1).astype(np.float32)
        labels = np.moveaxis(case.label, 2, 0).astype(np.uint8)
        n = shape[2]
        slices = CaseSlices(images, labels, (labels > 0).astype(np.uint8), np.arange(n, dtype=np.int32),
                            np.zeros((n, 2), np.int32))
        real = slices.save(root / f"case{i}" / "slices.npz")
        gen = real.with_name("samples.npz")
        np.savez(gen, samples=np.stack([make_fake(CaseSlices.load(real).images)] * 2).astype(np.float16),
                 z=slices.z)
        cases.append((f"case{i}", real, gen))
        files.append(real)
    return cases, files


def _shuffle(images: np.ndarray) -> np.ndarray:
    return images[np.random.default_rng(0).permutation(len(images))]


def test_through_plane_of_a_perfect_generator_is_perfect_and_of_shuffled_slices_bad(tmp_path: Path) -> None:
    cases, files = _cases(tmp_path / "perfect", lambda im: im)
    metas = {c: META for c, _, _ in cases}
    rows = through_plane_summary(cases, files, metas, metas)
    m = {r["metric"]: r["mean"] for r in rows}
    assert m["through_plane_ratio"] == pytest.approx(1.0, abs=1e-3)  # float16 storage of the samples
    assert m["through_plane_w1"] == pytest.approx(0.0, abs=1e-3)
    assert m["through_plane_ssim_ratio"] == pytest.approx(1.0, abs=1e-3)
    assert "slices 3 mm apart" in rows[0]["note"] and rows[0]["n"] == 2 * 2 * 11  # samples x cases x pairs
    cases, _ = _cases(tmp_path / "shuffled", _shuffle)
    m = {r["metric"]: r["mean"] for r in through_plane_summary(cases, files, metas, metas)}
    assert m["through_plane_ratio"] > 2 and m["through_plane_ssim_ratio"] < 0.9


def test_real_volumes_without_change_along_z_give_the_ratio_na_with_the_reason(tmp_path: Path) -> None:
    """Real test volumes of one image repeated along z: the ratio is NA saying so (it raised), W1 and the SSIM
    ratio are computed."""
    from medsynth.evaluation.volume_metrics import NO_REAL_CHANGE

    def flat(images: np.ndarray) -> np.ndarray:
        return np.repeat(images[len(images) // 2][None], len(images), axis=0)

    _, files = _cases(tmp_path / "real", flat, indices=(0,))
    real = CaseSlices.load(files[0])
    np.savez(files[0], images=flat(real.images).astype(np.float16), labels=real.labels, masks=np.repeat(
        real.masks[len(real.z) // 2][None], len(real.z), axis=0), z=real.z, offsets=real.offsets)
    cases, _ = _cases(tmp_path / "generated", lambda im: im, indices=(0,))
    rows = {r["metric"]: r for r in through_plane_summary(cases, files, {"case0": META}, {"case0": META})}
    ratio = rows["through_plane_ratio"]
    assert math.isnan(ratio["mean"]) and ratio["n"] == 0 and ratio["note"].startswith(NO_REAL_CHANGE.split("{")[0])
    assert rows["through_plane_w1"]["mean"] > 0 and np.isfinite(rows["through_plane_ssim_ratio"]["mean"])


def _smooth_volume(root: Path, name: str, spacing_z: float, extent_mm: float = 84.0) -> Path:
    """One smooth anatomy sampled every ``spacing_z`` mm: a body whose outline and texture change along z."""
    z_mm = np.arange(0.0, extent_mm + 1e-6, spacing_z)
    yy, xx = np.meshgrid(np.arange(48.0), np.arange(48.0), indexing="ij")
    images, masks = [], []
    for z in z_mm:
        a, b = 16 + 4 * np.sin(z / 20), 12 + 3 * np.cos(z / 25)
        body = ((xx - 24) / a) ** 2 + ((yy - 24) / b) ** 2 < 1
        images.append(np.where(body, 0.3 * np.sin(xx / 6 + z / 12) * np.cos(yy / 7 - z / 17), -1.0))
        masks.append(body)
    masks = np.stack(masks).astype(np.uint8)
    slices = CaseSlices(np.stack(images).astype(np.float32), masks, masks, np.arange(len(z_mm), dtype=np.int32),
                        np.zeros((len(z_mm), 2), np.int32))
    return slices.save(root / name / "slices.npz")


@pytest.mark.parametrize("real_spacing", [3.0, 5.0])
def test_through_plane_of_a_perfect_generator_at_another_slice_spacing_is_perfect(tmp_path: Path,
                                                                                 real_spacing: float) -> None:
    """Label data at 6 mm, image data at 3 (or 5) mm, one anatomy: compared at 6 mm, the ratio reads 1
    (neighbours one index apart read 1.9: twice the distance, twice the change)."""
    label_case = _smooth_volume(tmp_path / "labels", "a", 6.0)
    gen = label_case.with_name("samples.npz")
    real = CaseSlices.load(label_case)
    np.savez(gen, samples=real.images[None].astype(np.float16), z=real.z)  # the anatomy itself, at 6 mm
    reference = _smooth_volume(tmp_path / "images", "b", real_spacing)
    metas, reference_metas = {"a": {"spacing": [6.0, 6.0, 6.0]}}, {"b": {"spacing": [6.0, 6.0, real_spacing]}}
    rows = through_plane_summary([("a", label_case, gen)], [reference], metas, reference_metas)
    m = {r["metric"]: r["mean"] for r in rows}
    if real_spacing == 3.0:  # every other real slice: the generated slices' own positions (1.94 and 0.58 before)
        assert m["through_plane_ratio"] == pytest.approx(1.0, abs=1e-3)
        assert m["through_plane_ssim_ratio"] == pytest.approx(1.0, abs=1e-3)
    else:  # interpolated between 5 mm slices, a little smoother: 1.04 and 0.93 (1.18 and 0.82 before)
        assert m["through_plane_ratio"] == pytest.approx(1.0, abs=0.06)
        assert m["through_plane_ssim_ratio"] == pytest.approx(1.0, abs=0.08)
    assert "slices 6 mm apart" in rows[0]["note"]


def test_three_plane_fid_through_the_real_loading_code(tmp_path: Path, random_weights_dir: Path) -> None:
    """Inception runs on every coronal and sagittal plane through the body of every sample (one small
    case: CPU time), and a perfect generator reads FID and KID 0. (Random weights shrink every feature
    towards 0, so they cannot rank two generators; the plane cuts are tested in metrics/test_planes.)"""
    settings = {"weights_dir": str(random_weights_dir), "perceptual": "required", "batch_size": 16,
                "kid_subsets": 5, "kid_subset_size": 50}
    metas = {"case0": META}
    cases, files = _cases(tmp_path, lambda im: im, indices=(0,), shape=(16, 16, 8))
    rows = {r["metric"]: r for r in three_plane_summary(cases, files, metas, metas, settings, torch.device("cpu"))}
    assert list(rows) == THREE_PLANE
    body = np.load(files[0])["masks"].any(0)  # (x, y): coronal planes are the y with body, sagittal the x
    for plane, crossing in (("coronal", body.any(0)), ("sagittal", body.any(1))):
        for metric in ("fid", "kid"):
            row = rows[f"{metric}_{plane}"]
            assert row["n"] == 2 * int(crossing.sum())  # both samples
            assert row["mean"] == pytest.approx(0.0, abs=1e-9) and f"{int(crossing.sum())} real" in row["note"]
        # A few dozen planes against 2048 features: FID is computed, and its note says it reads high.
        assert "fewer planes than Inception's 2048 features" in rows[f"fid_{plane}"]["note"]
        assert "fewer planes" not in rows[f"kid_{plane}"]["note"]


def test_three_plane_kid_pairs_each_samples_planes_with_its_real_volumes(tmp_path: Path, calibrated_weights_dir: Path,
                                                                        monkeypatch) -> None:
    """Features that tell planes apart, a perfect generator (2 samples): each generated plane is paired with
    the real plane cut at the same place, so KID reads ~0; as independent sets the matched pairs pulled it
    below 0. FID, a sample at a time, reads 0 too."""
    from medsynth.evaluation import volume_metrics
    from medsynth.metrics.fid import frechet_distance, gaussian_stats
    from medsynth.metrics.kid import kernel_inception_distance

    calls = []

    def recording(a, b, *args, **kwargs):
        calls.append((a, b, kwargs["partner"]))
        return kernel_inception_distance(a, b, *args, **kwargs)

    monkeypatch.setattr(volume_metrics, "kernel_inception_distance", recording)
    settings = {"weights_dir": str(calibrated_weights_dir), "perceptual": "required", "batch_size": 16,
                "kid_subsets": 5, "kid_subset_size": 50}
    cases, files = _cases(tmp_path, lambda im: im, indices=(0,), shape=(16, 16, 8))
    rows = {r["metric"]: r for r in three_plane_summary(cases, files, {"case0": META}, {"case0": META}, settings,
                                                         torch.device("cpu"))}
    assert len(calls) == len(planes.SIDE_PLANES)
    for plane, (fg, fr, partner) in zip(planes.SIDE_PLANES, calls):
        n = len(fr)
        np.testing.assert_array_equal(partner, np.tile(np.arange(n), 2))  # both samples, plane by plane
        np.testing.assert_allclose(fg, fr[partner], rtol=1e-4, atol=1e-5)
        independent, _ = kernel_inception_distance(fg, fr, 5, 50)
        assert independent < 0 and abs(rows[f"kid_{plane}"]["mean"]) < 1e-6 * abs(independent), plane
        # FID a sample at a time reads 0; both samples' planes at once read the duplicates' narrower covariance.
        at_once = frechet_distance(*gaussian_stats(fg), *gaussian_stats(fr))
        assert at_once > 0 and rows[f"fid_{plane}"]["mean"] < 1e-6 * at_once, plane
        assert rows[f"fid_{plane}"]["note"].count("mean of 2 FIDs, one per sample of each label map") == 1


def test_both_sides_planes_are_padded_alike_whatever_the_other_volumes_extent(tmp_path: Path,
                                                                           calibrated_weights_dir: Path) -> None:
    """The same volume on both sides, one side also holding a longer volume (unpaired: two datasets'
    extents differ): its planes, padded to one square, give the same features on both sides (padded each
    to its own side's largest they were seen at two scales)."""
    _, short = _cases(tmp_path / "short", lambda im: im, indices=(0,), shape=(16, 16, 6))
    _, long = _cases(tmp_path / "long", lambda im: im, indices=(1,), shape=(16, 16, 48))  # 144 mm: 24 px
    metas = {"case0": META, "case1": META}
    one, both = (lambda images, f=f: _real_stacks(f, metas, images) for f in (short, short + long))
    size = plane_sizes(one, both)
    assert size == plane_sizes(both) and size != plane_sizes(one)
    model = load_inception(calibrated_weights_dir, torch.device("cpu"))
    alone, beside = (_plane_features(s, size, model, 16, torch.device("cpu"))[0] for s in (one, both))
    for plane in planes.SIDE_PLANES:
        n = len(alone[plane])
        assert n > 0 and len(beside[plane]) > n
        np.testing.assert_allclose(alone[plane], beside[plane][:n], rtol=1e-4, atol=1e-4)
        # padded to its own side's square the same planes read other features
        own = _plane_features(one, plane_sizes(one), model, 16, torch.device("cpu"))[0][plane]
        assert not np.allclose(own, alone[plane], rtol=1e-2, atol=1e-2)


def test_three_plane_without_weights_says_so(tmp_path: Path) -> None:
    cases, files = _cases(tmp_path, lambda im: im)
    rows = three_plane_summary(cases, files, {}, {}, {"weights_dir": str(tmp_path), "perceptual": "auto"},
                               torch.device("cpu"))
    assert [r["metric"] for r in rows] == THREE_PLANE
    assert all(math.isnan(r["mean"]) and "weights" in r["note"] for r in rows)


def test_side_plane_fid_of_one_plane_per_sample_says_so(tmp_path: Path, random_weights_dir: Path) -> None:
    """A test volume whose body one coronal and one sagittal plane cross, two samples: two generated planes,
    but FID scores a sample of each label map at a time, one plane each, and KID pairs both with one real
    plane: each NA saying why (KID was a bare NaN)."""
    settings = {"weights_dir": str(random_weights_dir), "perceptual": "required", "batch_size": 16,
                "kid_subsets": 5, "kid_subset_size": 50}
    cases, files = [], []
    for i, width in enumerate((1, 4)):  # the generated case: a one-voxel column; the other real volume: wider
        labels = np.zeros((4, 16, 16), np.uint8)
        labels[:, 6:6 + width, 6:6 + width] = 1
        images = np.where(labels > 0, 0.3, -1.0).astype(np.float32)
        real = CaseSlices(images, labels, labels.copy(), np.arange(4, dtype=np.int32),
                          np.zeros((4, 2), np.int32)).save(tmp_path / f"case{i}" / "slices.npz")
        np.savez(real.with_name("samples.npz"), samples=np.stack([images] * 2).astype(np.float16), z=np.arange(4))
        files.append(real)
    cases.append(("case0", files[0], files[0].with_name("samples.npz")))
    metas = {"case0": META, "case1": META}
    rows = {r["metric"]: r for r in three_plane_summary(cases, files, metas, metas, settings, torch.device("cpu"))}
    for plane in planes.SIDE_PLANES:
        fid = rows[f"fid_{plane}"]
        assert fid["n"] == 2 and math.isnan(fid["mean"])
        assert fid["note"] == f"not computed: 1 {plane} plane(s) of one sample of the label maps (a distribution needs two)"
        kid = rows[f"kid_{plane}"]  # paired with the one real plane cut at their place: NA saying so too
        assert math.isnan(kid["mean"]) and kid["note"].startswith(f"not computed: the 2 generated {plane} planes "
                                                                  "pair with fewer than 2 real ones")
