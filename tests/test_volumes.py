"""Volume metrics of a generated test set: a perfect generator scores perfectly, shuffled slices badly."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from medsynth.data.phantom import make_case
from medsynth.data.slicing import CaseSlices
from medsynth.volumes import THREE_PLANE, three_plane_summary, through_plane_summary

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
    m = {r["metric"]: r["mean"] for r in through_plane_summary(cases, files)}
    assert m["through_plane_ratio"] == pytest.approx(1.0, abs=1e-3)  # float16 storage of the samples
    assert m["through_plane_w1"] == pytest.approx(0.0, abs=1e-3)
    assert m["through_plane_ssim_ratio"] == pytest.approx(1.0, abs=1e-3)
    cases, _ = _cases(tmp_path / "shuffled", _shuffle)
    m = {r["metric"]: r["mean"] for r in through_plane_summary(cases, files)}
    assert m["through_plane_ratio"] > 2 and m["through_plane_ssim_ratio"] < 0.9


def test_three_plane_fid_through_the_real_loading_code(tmp_path: Path, random_weights_dir: Path) -> None:
    """Inception runs on every coronal and sagittal plane through the body of every sample (one small
    case: CPU time), and a perfect generator reads FID and KID 0. (Random weights shrink every feature
    towards 0, so they cannot rank two generators; the plane cuts are tested in metrics/test_planes.)"""
    settings = {"weights_dir": str(random_weights_dir), "perceptual": "required", "batch_size": 16,
                "kid_subsets": 5, "kid_subset_size": 50}
    metas = {"case0": META}
    cases, files = _cases(tmp_path, lambda im: im, indices=(0,), shape=(32, 32, 8))
    rows = {r["metric"]: r for r in three_plane_summary(cases, files, metas, metas, settings, torch.device("cpu"))}
    assert list(rows) == THREE_PLANE
    body = np.load(files[0])["masks"].any(0)  # (x, y): coronal planes are the y with body, sagittal the x
    for plane, crossing in (("coronal", body.any(0)), ("sagittal", body.any(1))):
        for metric in ("fid", "kid"):
            row = rows[f"{metric}_{plane}"]
            assert row["n"] == 2 * int(crossing.sum())  # both samples
            assert row["mean"] == pytest.approx(0.0, abs=1e-9) and f"{int(crossing.sum())} real" in row["note"]


def test_three_plane_without_weights_says_so(tmp_path: Path) -> None:
    cases, files = _cases(tmp_path, lambda im: im)
    rows = three_plane_summary(cases, files, {}, {}, {"weights_dir": str(tmp_path), "perceptual": "auto"},
                               torch.device("cpu"))
    assert [r["metric"] for r in rows] == THREE_PLANE
    assert all(math.isnan(r["mean"]) and "weights" in r["note"] for r in rows)
