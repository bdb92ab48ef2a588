"""Reorientation and resampling through world coordinates (medsynth.data.geometry)."""

from __future__ import annotations

import itertools

import nibabel as nib
import numpy as np
import pytest

from medsynth.data.geometry import canonical_grid, footprint_on_grid, inplane_grid, resample_to_grid, to_canonical
from medsynth.io.nifti import voxel_spacing


def _world(affine: np.ndarray, ijk) -> np.ndarray:
    return (affine @ np.array([*ijk, 1.0]))[:3]


def _random(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


# ------------------------------------------------------------------ to_canonical


def test_to_canonical_lps_gives_ras_and_same_world_points(flipped_affine: np.ndarray) -> None:
    arr = _random((5, 6, 7))
    out, aff = to_canonical(arr, flipped_affine)
    assert nib.aff2axcodes(flipped_affine) == ("L", "P", "S")
    assert nib.aff2axcodes(aff) == ("R", "A", "S")
    assert out.shape == arr.shape
    nx, ny, _ = arr.shape
    for i, j, k in [(0, 0, 0), (4, 5, 6), (1, 3, 2), (4, 0, 3), (0, 5, 6), (2, 2, 0)]:
        ci, cj, ck = nx - 1 - i, ny - 1 - j, k  # x and y flipped, z kept
        assert out[ci, cj, ck] == arr[i, j, k]
        np.testing.assert_allclose(_world(aff, (ci, cj, ck)), _world(flipped_affine, (i, j, k)), atol=1e-9)
    np.testing.assert_allclose(voxel_spacing(aff), voxel_spacing(flipped_affine))


def test_to_canonical_permuted_axes_every_voxel_keeps_its_world_point() -> None:
    # Array axes are (anterior->posterior, inferior->superior... flipped, left->right): "P I R".
    affine = np.array(
        [
            [0.0, 0.0, 1.5, -20.0],  # world x (R) from axis 2
            [-2.0, 0.0, 0.0, 35.0],  # world y (A) from axis 0, flipped
            [0.0, -3.0, 0.0, 12.0],  # world z (S) from axis 1, flipped
            [0.0, 0.0, 0.0, 1.0],
        ]
    )
    arr = _random((4, 5, 6), seed=3)
    out, aff = to_canonical(arr, affine)
    assert nib.aff2axcodes(affine) == ("P", "I", "R")
    assert nib.aff2axcodes(aff) == ("R", "A", "S")
    assert out.shape == (6, 4, 5)
    np.testing.assert_allclose(np.abs(np.diag(aff)[:3]), [1.5, 2.0, 3.0])
    inv_src = np.linalg.inv(affine)
    for idx in itertools.product(*(range(n) for n in out.shape)):
        src = inv_src @ aff @ np.array([*idx, 1.0])
        src_idx = np.rint(src[:3]).astype(int)
        np.testing.assert_allclose(src[:3], src_idx, atol=1e-9)  # lands exactly on a source voxel
        assert out[idx] == arr[tuple(src_idx)]
    # The grid alone, without moving voxels, is the same.
    shape_c, aff_c = canonical_grid(arr.shape, affine)
    assert shape_c == out.shape
    np.testing.assert_array_equal(aff_c, aff)


def test_to_canonical_on_ras_is_unchanged() -> None:
    affine = np.diag([2.0, 3.0, 4.0, 1.0])
    affine[:3, 3] = [-10.0, 5.0, 7.0]
    arr = _random((3, 4, 5))
    out, aff = to_canonical(arr, affine)
    np.testing.assert_array_equal(out, arr)
    np.testing.assert_allclose(aff, affine)


# ------------------------------------------------------------------ inplane_grid


def _corners(shape, affine):
    first = _world(affine, (-0.5, -0.5, -0.5))
    last = _world(affine, tuple(n - 0.5 for n in shape))
    return first, last


@pytest.mark.parametrize("spacing_xy", [3.7, 1.0, 5.0])
def test_inplane_grid_preserves_field_of_view_and_z(flipped_affine: np.ndarray, spacing_xy: float) -> None:
    shape = (40, 30, 5)  # 100 mm x 52.5 mm x 15 mm
    new_shape, new_aff = inplane_grid(shape, flipped_affine, spacing_xy)
    new_sp = voxel_spacing(new_aff)
    np.testing.assert_allclose(new_sp, [spacing_xy, spacing_xy, 3.0])
    assert new_shape[2] == shape[2]
    # Axis directions are kept (no reorientation here).
    np.testing.assert_array_equal(np.sign(np.diag(new_aff)[:3]), np.sign(np.diag(flipped_affine)[:3]))
    old_first, old_last = _corners(shape, flipped_affine)
    new_first, new_last = _corners(new_shape, new_aff)
    np.testing.assert_allclose(new_first, old_first, atol=1e-9)  # corners coincide at the start
    tol = np.array([spacing_xy / 2, spacing_xy / 2, 1e-9]) + 1e-9
    assert np.all(np.abs(new_last - old_last) <= tol), (new_last, old_last)


def test_inplane_grid_none_keeps_grid_as_copy(flipped_affine: np.ndarray) -> None:
    shape, aff = inplane_grid((10, 11, 12), flipped_affine, None)
    assert shape == (10, 11, 12)
    np.testing.assert_array_equal(aff, flipped_affine)
    aff[0, 0] = 99.0
    assert flipped_affine[0, 0] == -2.5


# ------------------------------------------------------------------ resample_to_grid


def _label_map(shape) -> np.ndarray:
    """Blocky labels with values far apart, so any interpolation would show."""
    rng = np.random.default_rng(5)
    coarse = rng.choice(np.array([0, 3, 7, 200], dtype=np.uint8), size=tuple(n // 4 + 1 for n in shape))
    blocks = np.repeat(np.repeat(np.repeat(coarse, 4, axis=0), 4, axis=1), 4, axis=2)
    return np.ascontiguousarray(blocks[: shape[0], : shape[1], : shape[2]])


def test_nearest_neighbour_never_creates_new_label_values(flipped_affine: np.ndarray) -> None:
    lab = _label_map((30, 27, 12))
    values = set(np.unique(lab).tolist())
    coarse_aff = flipped_affine @ np.diag([1.7, 1.7, 1.7, 1.0])
    coarse_shape = tuple(int(np.ceil(n / 1.7)) for n in lab.shape)
    down = resample_to_grid(lab, flipped_affine, coarse_aff, coarse_shape, order=0)
    back = resample_to_grid(down, coarse_aff, flipped_affine, lab.shape, order=0)
    assert down.shape == coarse_shape and back.shape == lab.shape
    assert set(np.unique(down).tolist()) <= values
    assert set(np.unique(back).tolist()) <= values
    assert len(set(np.unique(down).tolist())) == len(values)  # nothing lost either
    assert np.mean(back == lab) > 0.6  # 4-voxel blocks mostly survive a 1.7x round trip


def test_nearest_neighbour_integer_shift_is_exact(flipped_affine: np.ndarray) -> None:
    lab = _label_map((12, 12, 4))
    shifted_aff = flipped_affine.copy()
    shifted_aff[:3, 3] = _world(flipped_affine, (2, 1, 0))  # dst voxel 0 = src voxel (2, 1, 0)
    out = resample_to_grid(lab, flipped_affine, shifted_aff, (8, 9, 4), order=0, cval=0)
    np.testing.assert_array_equal(out, lab[2:10, 1:10, :])


def _smooth_field(affine: np.ndarray, shape) -> np.ndarray:
    ijk = np.indices(shape).reshape(3, -1).astype(np.float64)
    xyz = affine[:3, :3] @ ijk + affine[:3, 3:4]
    f = np.sin(xyz[0] / 15.0) + np.cos(xyz[1] / 20.0) + xyz[2] / 50.0
    return f.reshape(shape).astype(np.float32)


def test_linear_resampling_to_coarser_grid_samples_the_right_world_points(flipped_affine: np.ndarray) -> None:
    shape = (48, 56, 5)
    img = _smooth_field(flipped_affine, shape)
    new_shape, new_aff = inplane_grid(shape, flipped_affine, 4.25)
    down = resample_to_grid(img, flipped_affine, new_aff, new_shape, order=1, cval=-9.0)
    expected = _smooth_field(new_aff, new_shape)  # the field evaluated at the new voxel centres
    inner = (slice(1, -1), slice(1, -1), slice(None))
    assert np.abs(down[inner] - expected[inner]).max() < 0.03


def test_forward_and_back_keeps_smooth_image_and_grid(flipped_affine: np.ndarray) -> None:
    shape = (48, 56, 5)
    img = _smooth_field(flipped_affine, shape)
    new_shape, new_aff = inplane_grid(shape, flipped_affine, 4.25)
    down = resample_to_grid(img, flipped_affine, new_aff, new_shape, order=1, cval=-9.0)
    back = resample_to_grid(down, new_aff, flipped_affine, shape, order=1, cval=-9.0)
    assert back.shape == shape
    inner = (slice(4, -4), slice(4, -4), slice(None))
    err = np.abs(back[inner] - img[inner])
    assert err.mean() < 0.01 and err.max() < 0.05
    # A grid shifted by half the field of view would give a large error: the test can fail.
    wrong = flipped_affine.copy()
    wrong[0, 3] += 20.0
    off = resample_to_grid(down, new_aff, wrong, shape, order=1, cval=-9.0)
    assert np.abs(off[inner] - img[inner]).mean() > 0.1


def test_identity_returns_equal_copy(flipped_affine: np.ndarray) -> None:
    img = _random((6, 7, 3))
    out = resample_to_grid(img, flipped_affine, flipped_affine.copy(), img.shape, order=3)
    np.testing.assert_array_equal(out, img)
    assert out is not img and not np.shares_memory(out, img)
    out[0, 0, 0] += 1.0
    assert out[0, 0, 0] != img[0, 0, 0]


def test_cval_fills_outside_source(flipped_affine: np.ndarray) -> None:
    img = np.ones((5, 5, 2), dtype=np.float32)
    shifted = flipped_affine.copy()
    shifted[:3, 3] = _world(flipped_affine, (3, 0, 0))
    out = resample_to_grid(img, flipped_affine, shifted, (5, 5, 2), order=1, cval=-1.0)
    np.testing.assert_array_equal(out[:2], 1.0)
    np.testing.assert_array_equal(out[3:], -1.0)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16])
def test_linear_resampling_of_integer_images_gives_float32_without_wraparound(
    flipped_affine: np.ndarray, dtype: type
) -> None:
    # Neighbours 0 and the type's maximum: an integer b - a would wrap (unsigned) or overflow (int16).
    top = min(np.iinfo(dtype).max, 30000)
    img = np.zeros((40, 40, 3), dtype=dtype)
    img[::2] = top
    new_shape, new_aff = inplane_grid(img.shape, flipped_affine, 1.5 * 2.5)  # 1.5 source voxels per output voxel
    out = resample_to_grid(img, flipped_affine, new_aff, new_shape, order=1, cval=0.0)
    assert out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= top
    assert np.any((out > 0.1 * top) & (out < 0.9 * top))  # truly interpolated, not rounded to a neighbour
    reference = resample_to_grid(img.astype(np.float32), flipped_affine, new_aff, new_shape, order=1, cval=0.0)
    np.testing.assert_allclose(out, reference, rtol=1e-6)


def test_nearest_resampling_keeps_the_label_dtype(flipped_affine: np.ndarray) -> None:
    lab = np.arange(6 * 7 * 3, dtype=np.uint8).reshape(6, 7, 3)
    new_shape, new_aff = inplane_grid(lab.shape, flipped_affine, 5.0)
    assert resample_to_grid(lab, flipped_affine, new_aff, new_shape, order=0).dtype == np.uint8


@pytest.mark.parametrize("order", [0, 1])
def test_threaded_slabs_give_the_same_volume(flipped_affine: np.ndarray, order: int) -> None:
    img = _smooth_field(flipped_affine, (30, 34, 11))
    new_shape, new_aff = inplane_grid(img.shape, flipped_affine, 3.3)
    one = resample_to_grid(img, flipped_affine, new_aff, new_shape, order=order, cval=-2.0)
    three = resample_to_grid(img, flipped_affine, new_aff, new_shape, order=order, cval=-2.0, workers=3)
    np.testing.assert_array_equal(three, one)


@pytest.mark.parametrize("order", [0, 1])
def test_a_volume_stored_lps_comes_back_from_a_coarser_grid_with_its_edges(order: int) -> None:
    """Generation writes volumes back onto their source grid. Stored LPS (x and y flipped, as ITK and
    TotalSegmentator write them), the outer in-plane ring came back as cval (air under labels), where a
    RAS volume keeps the edge value within half a voxel: both must match, flipped."""
    shape = (40, 40, 4)
    lps = np.array([[-3.0, 0, 0, 60.0], [0, -3.0, 0, 40.0], [0, 0, 8.0, -20.0], [0, 0, 0, 1]])
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[:2, 3] = shape[0] - 1
    ras = lps @ flip  # the same voxel centres, indexed from the patient's right and posterior
    field = np.full(shape, 7.0, np.float32) if order else np.full(shape, 3, np.uint8)
    new_shape, new_aff = inplane_grid(shape, ras, 6.0)
    back = {}
    for name, affine, stored in (("lps", lps, field), ("ras", ras, field[::-1, ::-1].copy())):
        down = resample_to_grid(stored, affine, new_aff, new_shape, order=order, cval=0)
        back[name] = resample_to_grid(down, new_aff, affine, shape, order=order, cval=0)
    np.testing.assert_array_equal(back["lps"], field)  # every voxel, the ring included
    np.testing.assert_array_equal(back["lps"], back["ras"][::-1, ::-1])


@pytest.mark.parametrize("order", [0, 1])
def test_an_oblique_grid_keeps_the_edge_value_within_half_a_voxel_and_cval_beyond(order: int) -> None:
    """The general path (a source rotated against the grid, or resampled along z) follows the fast path's
    edge rule: a point within half a voxel of the outermost voxel centres takes their value, a point
    further out cval. scipy's own "constant" mode gave cval from the outermost centres on."""
    shape = (20, 16, 6)
    src = np.diag([2.0, 2.0, 3.0, 1.0])
    field = np.full(shape, 5, np.uint8) if order == 0 else np.full(shape, 5.0, np.float32)
    angle = np.deg2rad(20)
    rot = np.eye(4)
    rot[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    centre = src @ np.array([(shape[0] - 1) / 2, (shape[1] - 1) / 2, 0, 1])
    to_centre, back = np.eye(4), np.eye(4)
    to_centre[:3, 3], back[:3, 3] = -centre[:3], centre[:3]
    dst = back @ rot @ to_centre @ src @ np.diag([1.0, 1.0, 0.5, 1.0])  # rotated 20 degrees, z resampled
    dst_shape = (20, 16, 11)
    out = resample_to_grid(field, src, dst, dst_shape, order=order, cval=0)
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in dst_shape], indexing="ij"), -1).reshape(-1, 3)
    coords = (np.linalg.inv(src) @ dst @ np.c_[ijk, np.ones(len(ijk))].T)[:3].T
    inside = ((coords >= -0.5) & (coords <= np.array(shape) - 0.5)).all(1).reshape(dst_shape)
    assert 0 < inside.mean() < 1  # both kinds of point are there
    np.testing.assert_allclose(out[inside], 5, atol=1e-5)
    assert (out[~inside] == 0).all()


@pytest.mark.parametrize("spacing_xy", [0.37, 1.0, 2.1, 4.0])
def test_footprint_marks_each_true_voxels_nearest_grid_voxel(spacing_xy: float) -> None:
    """Brute force: every True source voxel's nearest grid voxel (by world distance in-plane), nothing else;
    a one-voxel line that nearest-neighbour resampling onto the coarser grid drops is kept."""
    rng = np.random.default_rng(5)
    mask = rng.random((23, 17, 3)) < 0.03
    src = np.diag([0.8, 0.9, 2.5, 1.0])
    src[:3, 3] = [-40.0, 12.0, 7.0]
    shape, dst = inplane_grid(mask.shape, src, spacing_xy)
    got = footprint_on_grid(mask, src, dst, shape)
    nearest_ones = np.zeros(shape, bool)  # each True voxel's nearest grid voxels (two or four on a tie)
    centres = np.stack(np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij"), -1) @ np.diag(
        np.diag(dst)[:2]) + dst[:2, 3]
    for x, y, z in zip(*np.nonzero(mask)):
        distance = ((centres - (src[:2, :2] @ [x, y] + src[:2, 3])) ** 2).sum(-1)
        ties = distance <= distance.min() + 1e-9
        assert got[:, :, z][ties].any(), (x, y, z)
        nearest_ones[:, :, z] |= ties
    assert not (got & ~nearest_ones).any()
    if spacing_xy > 1:  # coarser: it holds what nearest resampling keeps, and the line that resampling drops
        assert not (resample_to_grid(mask.astype(np.uint8), src, dst, shape, order=0).astype(bool) & ~got).any()
        line = np.zeros_like(mask)
        line[:, 9, 1] = True
        assert not resample_to_grid(line.astype(np.uint8), src, dst, shape, order=0).any()
        assert footprint_on_grid(line, src, dst, shape)[:, :, 1].any(axis=1).all()


def test_footprint_refuses_grids_that_differ_by_more_than_in_plane_scale() -> None:
    src = np.diag([1.0, 1.0, 2.0, 1.0])
    with pytest.raises(ValueError, match="in-plane by scale and shift only"):
        footprint_on_grid(np.ones((4, 4, 2), bool), src, np.diag([1.0, 1.0, 1.0, 1.0]), (4, 4, 4))
