"""Voxel-grid geometry: reorientation and resampling through world coordinates.

All resampling goes through one function that maps output voxels to input
voxels via the two affines, so the forward (source -> training grid) and the
inverse (generated volume -> source grid) cannot drift apart.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np
from nibabel import orientations as nio
from scipy import ndimage

from medsynth.io.nifti import voxel_spacing

CANONICAL = ("R", "A", "S")


def _to_ras(affine: np.ndarray) -> np.ndarray:
    return nio.ornt_transform(nio.io_orientation(affine), nio.axcodes2ornt(CANONICAL))


def to_canonical(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Permute/flip axes to RAS+ (an exact operation: no interpolation)."""
    out = nio.apply_orientation(array, _to_ras(affine))
    return np.ascontiguousarray(out), canonical_grid(array.shape, affine)[1]


def canonical_grid(shape: tuple[int, ...], affine: np.ndarray) -> tuple[tuple[int, ...], np.ndarray]:
    """Shape and affine that ``to_canonical`` gives a volume of ``shape``, without touching any voxels."""
    transform = _to_ras(affine)
    permuted = nio.apply_orientation(np.broadcast_to(np.zeros((), dtype=bool), shape), transform).shape
    return tuple(permuted), affine @ nio.inv_ornt_aff(transform, shape)


def inplane_grid(
    shape: tuple[int, int, int], affine: np.ndarray, spacing_xy: float | None
) -> tuple[tuple[int, int, int], np.ndarray]:
    """Grid with ``spacing_xy`` mm in x and y covering the same field of view; z kept.

    Voxel corners of the old and new grid coincide at the volume's edges, so
    the extent in millimetres is preserved up to rounding of the voxel count.
    """
    if spacing_xy is None:
        return tuple(shape), affine.copy()
    old = voxel_spacing(affine)
    factors = np.array([spacing_xy / old[0], spacing_xy / old[1], 1.0])
    new_shape = tuple(max(1, int(round(n / f))) for n, f in zip(shape, factors))
    # Index i on the new grid sits at old index (i + 0.5) * f - 0.5.
    scale = np.diag([*factors, 1.0])
    scale[:3, 3] = (factors - 1.0) / 2.0
    return new_shape, affine @ scale


def resample_to_grid(
    array: np.ndarray,
    src_affine: np.ndarray,
    dst_affine: np.ndarray,
    dst_shape: tuple[int, int, int],
    *,
    order: int,
    cval: float = 0.0,
    workers: int = 1,
    edge: float = 0.5,
) -> np.ndarray:
    """Resample ``array`` (on ``src_affine``) onto the grid (``dst_affine``, ``dst_shape``).

    ``order=0`` is nearest neighbour, the only order allowed for label maps; it
    keeps the dtype. Interpolating an integer volume (an int16 CT) gives float32.
    ``workers`` threads share the in-plane path slab by slab. Up to ``edge`` source voxels beyond the
    outer voxel centres a sample takes the edge value (half a voxel: the source's field of view), cval
    further out.
    """
    out_dtype = array.dtype if order == 0 or np.issubdtype(array.dtype, np.floating) else np.dtype(np.float32)
    vox = np.linalg.inv(src_affine) @ dst_affine
    if np.allclose(vox, np.eye(4), atol=1e-6) and tuple(array.shape) == tuple(dst_shape):
        return array.astype(out_dtype)
    scale, shift = np.diag(vox)[:3], vox[:3, 3]
    # In-plane scaling and flips (a volume stored LPS, as ITK and TotalSegmentator write them, against a
    # RAS grid): the fast path, which keeps the edge value within half a voxel of the edge. The general
    # path below gives cval there, which made the outer ring of every volume written back to an LPS
    # source air under its labels.
    if (np.allclose(vox[:3, :3], np.diag(scale), atol=1e-9) and np.all(np.abs(scale) > 1e-9) and scale[2] > 0
            and abs(scale[2] - 1) < 1e-9 and abs(shift[2]) < 1e-6 and dst_shape[2] == array.shape[2]):
        return per_slab(lambda v: _resample_xy(v, scale[:2], shift[:2], tuple(dst_shape[:2]), order, cval, out_dtype,
                                               edge), array, workers)
    # Any other grid (oblique, or resampled along z): the edge value within half a voxel of the edge, as on
    # the fast path, cval beyond (scipy's "constant" gives cval beyond the edge voxels' centres).
    out = ndimage.affine_transform(array, vox[:3, :3], offset=vox[:3, 3], output_shape=tuple(dst_shape),
                                   output=out_dtype, order=order, mode="nearest")
    _fill_outside(out, vox, array.shape, cval, edge)
    return out


def _fill_outside(out: np.ndarray, vox: np.ndarray, src_shape: tuple[int, ...], cval: float, edge: float) -> None:
    """Set ``cval`` (in place) where ``out``'s voxels map (by ``vox``) more than ``edge`` voxels beyond the
    source's voxel centres; computed a z-slice at a time (a coordinate array of the whole grid would be
    three times the volume in float64)."""
    i, j = np.meshgrid(np.arange(out.shape[0]), np.arange(out.shape[1]), indexing="ij")
    plane = vox[:3, 0, None, None] * i + vox[:3, 1, None, None] * j + vox[:3, 3, None, None]  # (3, X, Y)
    hi = np.asarray(src_shape[:3], np.float64)[:, None, None] - 1.0 + edge
    for k in range(out.shape[2]):
        src = plane + vox[:3, 2, None, None] * k
        outside = ((src < -edge) | (src > hi)).any(axis=0)
        if outside.any():
            out[:, :, k][outside] = cval


def per_slab(func: Callable[[np.ndarray], np.ndarray], volume: np.ndarray, workers: int) -> np.ndarray:
    """Apply a slice-wise operation on z-slabs in threads (numpy and scipy.ndimage release the GIL)."""
    if workers <= 1 or volume.shape[2] < 2 * workers:
        return func(volume)
    bounds = np.linspace(0, volume.shape[2], workers + 1).round().astype(int)
    with ThreadPoolExecutor(workers) as pool:
        parts = list(pool.map(lambda z: func(volume[:, :, z[0] : z[1]]), zip(bounds[:-1], bounds[1:])))
    return np.concatenate(parts, axis=2)


def _resample_xy(array: np.ndarray, scale, shift, shape_xy: tuple[int, int], order: int, cval: float,
                 out_dtype: np.dtype, edge: float = 0.5) -> np.ndarray:
    """In-plane scaling, z untouched: two 1-D passes of index arithmetic.

    This is the preprocessing path (canonical volume -> training grid), several
    times faster than a general 3D affine resampling of a large CT.
    """
    out = array
    for axis in (0, 1):
        n_in = array.shape[axis]
        raw = np.arange(shape_xy[axis]) * scale[axis] + shift[axis]
        # Within ``edge`` voxels of the edge voxel's centre a sample takes the edge value; further out cval.
        outside = (raw < -edge) | (raw > n_in - 1 + edge)
        pos = np.clip(raw, 0, n_in - 1)
        if order == 0:
            # floor(p + 0.5): ties go up, as with scipy's nearest neighbour
            out = np.take(out, np.floor(pos + 0.5).astype(np.intp), axis=axis)
        elif order == 1:
            lo = np.floor(pos).astype(np.intp)
            hi = np.minimum(lo + 1, n_in - 1)
            bshape = [1, 1, 1]
            bshape[axis] = -1
            w = (pos - lo).astype(np.float32).reshape(bshape)
            # In float: b - a of unsigned (or large int16) samples would wrap around.
            work = np.result_type(out.dtype, np.float32)
            a = np.take(out, lo, axis=axis).astype(work, copy=False)
            b = np.take(out, hi, axis=axis).astype(work, copy=False)
            b -= a  # a + (b - a) * w, in place: no large temporaries
            b *= w
            b += a
            out = b
        else:
            raise ValueError(f"order {order} is not supported; use 0 (labels) or 1 (images)")
        if outside.any():
            index = [slice(None)] * 3
            index[axis] = outside
            out[tuple(index)] = cval
    return np.ascontiguousarray(out.astype(out_dtype, copy=False))


def footprint_on_grid(mask: np.ndarray, src_affine: np.ndarray, dst_affine: np.ndarray,
                      dst_shape: tuple[int, int, int]) -> np.ndarray:
    """The grid voxels nearest to a True source voxel of ``mask`` (canonical, on ``src_affine``), for grids
    that differ in-plane by scale and shift (``inplane_grid``). Nearest-neighbour resampling onto a coarser
    grid samples one source voxel per grid voxel and drops a structure thinner than the grid's spacing
    (a label between TotalSegmentator's organs at the body's edge); its footprint keeps it."""
    vox = np.linalg.inv(dst_affine) @ src_affine  # source index -> grid index
    if not (np.allclose(vox[:3, :3], np.diag(np.diag(vox[:3, :3])), atol=1e-6)
            and np.isclose(vox[2, 2], 1.0) and np.isclose(vox[2, 3], 0.0) and mask.shape[2] == dst_shape[2]):
        raise ValueError("footprint_on_grid takes grids that differ in-plane by scale and shift only")
    out = mask.astype(bool, copy=False)
    for axis in (0, 1):
        index = np.clip(np.rint(vox[axis, axis] * np.arange(out.shape[axis]) + vox[axis, 3]).astype(np.int64),
                        0, dst_shape[axis] - 1)
        out = _any_per_index(out, index, dst_shape[axis], axis)
    return out


def _any_per_index(mask: np.ndarray, index: np.ndarray, size: int, axis: int) -> np.ndarray:
    """``out[j] = any(mask[i] for i with index[i] == j)`` along ``axis``."""
    order = np.argsort(index, kind="stable")
    ordered = index[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    shape = list(mask.shape)
    shape[axis] = size
    out = np.zeros(shape, dtype=bool)
    where = [slice(None)] * mask.ndim
    where[axis] = ordered[starts]
    out[tuple(where)] = np.logical_or.reduceat(np.take(mask, order, axis=axis), starts, axis=axis)
    return out
