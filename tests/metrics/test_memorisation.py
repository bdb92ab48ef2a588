"""Memorisation audit: copies of training slices are flagged, new images are not."""

import numpy as np
import pytest
import torch

from medsynth.metrics.memorisation import audit, audit_features, nearest_features, nearest_training


def _slices(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    smooth = torch.nn.functional.avg_pool2d(torch.rand(n, 1, 40, 40, generator=g) * 2 - 1, 5, 1, 2)
    return smooth[:, 0, 4:36, 4:36] * 3  # (n, 32, 32), smooth patient-like structure


def test_nearest_training_matches_a_brute_force_search() -> None:
    train, queries = _slices(20, 0), _slices(7, 1)
    masks = torch.zeros(7, 32, 32)
    masks[:, 6:26, 4:28] = 1
    near = nearest_training(queries, masks, train, chunk=3)
    d = (((queries[:, None] - train[None]) ** 2 * masks[:, None]).sum((2, 3)) / masks.sum((1, 2))[:, None]).sqrt()
    np.testing.assert_allclose(near.distance, d.min(1).values.numpy(), rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(near.index, d.argmin(1).numpy())


def test_a_float16_training_set_searched_in_chunks_finds_what_one_search_finds() -> None:
    """Held as float16 and converted a chunk at a time: the distances and first-of-equal indices of one
    search over the float32 set; ``allowed`` leaves slices out as a smaller set would."""
    train, queries = _slices(20, 0), _slices(7, 1)
    train[11] = train[4]  # a tie: the earlier slice wins
    masks = torch.ones(7, 32, 32)
    whole = nearest_training(queries, masks, train.half().float(), train_chunk=1000)
    chunked = nearest_training(queries, masks, train.half(), train_chunk=3)
    np.testing.assert_allclose(chunked.distance, whole.distance, rtol=1e-12)
    np.testing.assert_array_equal(chunked.index, whole.index)
    exact = nearest_training(train[[4, 2]], torch.ones(2, 32, 32), train, train_chunk=3)
    np.testing.assert_array_equal(exact.index, [4, 2])
    allowed = np.ones(20, bool)
    allowed[[4, 11, 2]] = False
    kept = np.flatnonzero(allowed)
    near = nearest_training(train[[4, 2]], torch.ones(2, 32, 32), train, train_chunk=3, allowed=allowed)
    sub = nearest_training(train[[4, 2]], torch.ones(2, 32, 32), train[kept])
    np.testing.assert_array_equal(near.index, kept[sub.index])
    np.testing.assert_allclose(near.distance, sub.distance, rtol=1e-12)
    with pytest.raises(ValueError, match="no training slice is a candidate"):
        nearest_training(queries, masks, train, allowed=np.zeros(20, bool))
    with pytest.raises(ValueError, match="no slices"):
        nearest_training(queries, masks, train[:0])
    none = nearest_training(queries[:0], masks[:0], train)  # a case whose slicing kept no slice
    assert none.distance.shape == none.index.shape == (0,)


def test_a_generator_that_returns_training_slices_is_flagged() -> None:
    train, real = _slices(30, 0), _slices(10, 1)
    body = torch.ones(10, 32, 32)
    copies = train[[3, 7, 11, 19, 2, 5, 8, 13, 21, 29]] + 0.01 * _slices(10, 5)  # copies, a little noise
    result = audit(copies, body, real, body, train)
    summary = result.summary
    assert summary["flagged"] == 10 and summary["ratio_median"] < 0.1
    np.testing.assert_array_equal(result.nearest.index, [3, 7, 11, 19, 2, 5, 8, 13, 21, 29])  # it finds the originals
    # A "generator" that makes new patients (fake = real held-out images) scores like real data: nothing flagged.
    summary = audit(real, body, real, body, train).summary
    assert summary["flagged"] == 0 and summary["ratio_median"] == pytest.approx(1.0)


def test_test_slices_inside_the_training_set_are_refused() -> None:
    train = _slices(5, 0)
    with pytest.raises(ValueError, match="test slices among the training slices"):
        audit(_slices(3, 2), torch.ones(3, 32, 32), train, torch.ones(5, 32, 32), train)


def test_nothing_to_compare_is_na_with_the_reason() -> None:
    """No generated test slice, or no real one for the unit: NaN and a note, not an IndexError."""
    from medsynth.metrics.memorisation import Nearest, compare

    some, none = Nearest(np.array([0.2, 0.3]), np.array([0, 1])), Nearest(np.zeros(0), np.zeros(0, np.int64))
    for gen, ref, why in ((none, some, "no generated test slice"), (some, none, "no real test slice")):
        result = compare(gen, ref, 0.5)
        assert np.isnan(result.summary["ratio_median"]) and result.summary["flagged"] == 0
        assert why in result.summary["note"] and not result.flagged.any() and len(result.ratio) == len(gen.distance)


def test_nearest_features_matches_a_brute_force_search_and_flags_copies() -> None:
    g = np.random.default_rng(0)
    train, real = g.normal(size=(40, 16)) * 1e-3, g.normal(size=(9, 16)) * 1e-3  # no fixed unit
    near = nearest_features(real, train, chunk=4, train_chunk=7)
    d = np.linalg.norm(real[:, None] - train[None], axis=2)
    np.testing.assert_allclose(near.distance, d.min(1), rtol=1e-9)
    np.testing.assert_array_equal(near.index, d.argmin(1))
    copies = audit_features(train[[5, 9, 1]], real, train)
    assert copies.flagged.all() and copies.summary["ratio_median"] < 1e-3
    np.testing.assert_array_equal(copies.nearest.index, [5, 9, 1])
    new = audit_features(real, real, train)
    assert not new.flagged.any() and new.summary["ratio_median"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="test slices among the training slices"):
        audit_features(real, train[:5], train)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (bench/gpu_table.py's search row checks it too)")
def test_the_search_on_a_gpu_finds_the_cpus_slices_and_distances() -> None:
    """float64 on the GPU too: the flags of an audit must not depend on where it ran."""
    train, queries = _slices(40, 0), _slices(9, 1)
    train[30] = train[3]  # a tie: the earlier slice wins on both
    masks = (torch.rand(9, 32, 32, generator=torch.Generator().manual_seed(2)) < 0.7).float()
    cpu = nearest_training(queries, masks, train.half(), train_chunk=7)
    cuda = torch.device("cuda")
    gpu = nearest_training(queries, masks, train.half().to(cuda), device=cuda)  # its own chunk sizes
    np.testing.assert_array_equal(gpu.index, cpu.index)
    np.testing.assert_allclose(gpu.distance, cpu.distance, rtol=1e-10)
