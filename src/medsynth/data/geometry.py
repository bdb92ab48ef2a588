"""Voxel-grid geometry: reorientation and resampling through world coordinates.

All resampling goes through one function that maps output voxels to input
voxels via the two affines, so the forward (source -> training grid) and the
inverse (generated volume -> source grid) cannot drift apart.
"""

from __future__ import annotations

import numpy as np
from nibabel import orientations as nio
from scipy import ndimage

from medsynth.io.nifti import voxel_spacing

CANONICAL = ("R", "A", "S")


def to_canonical(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Permute/flip axes to RAS+ (an exact operation: no interpolation)."""
    current = nio.io_orientation(affine)
    transform = nio.ornt_transform(current, nio.axcodes2ornt(CANONICAL))
    out = nio.apply_orientation(array, transform)
    new_affine = affine @ nio.inv_ornt_aff(transform, array.shape)
    return np.ascontiguousarray(out), new_affine


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
) -> np.ndarray:
    """Resample ``array`` (on ``src_affine``) onto the grid (``dst_affine``, ``dst_shape``).

    ``order=0`` is nearest neighbour, the only order allowed for label maps.
    """
    vox = np.linalg.inv(src_affine) @ dst_affine
    if np.allclose(vox, np.eye(4), atol=1e-6) and tuple(array.shape) == tuple(dst_shape):
        return array.copy()
    scale, shift = np.diag(vox)[:3], vox[:3, 3]
    if (np.allclose(vox[:3, :3], np.diag(scale), atol=1e-9) and np.all(scale > 0)
            and abs(scale[2] - 1) < 1e-9 and abs(shift[2]) < 1e-6 and dst_shape[2] == array.shape[2]):
        return _resample_xy(array, scale[:2], shift[:2], tuple(dst_shape[:2]), order, cval)
    return ndimage.affine_transform(
        array, vox[:3, :3], offset=vox[:3, 3], output_shape=tuple(dst_shape), order=order, mode="constant", cval=cval
    )


def _resample_xy(array: np.ndarray, scale, shift, shape_xy: tuple[int, int], order: int, cval: float) -> np.ndarray:
    """In-plane scaling, z untouched: two 1-D passes of index arithmetic.

    This is the preprocessing path (canonical volume -> training grid), several
    times faster than a general 3D affine resampling of a large CT.
    """
    out = array
    for axis in (0, 1):
        n_in = array.shape[axis]
        raw = np.arange(shape_xy[axis]) * scale[axis] + shift[axis]
        # Within half a voxel of the edge a sample takes the edge value; further out it is cval.
        outside = (raw < -0.5) | (raw > n_in - 0.5)
        pos = np.clip(raw, 0, n_in - 1)
        if order == 0:
            # floor(p + 0.5): ties go up, as with scipy's nearest neighbour
            out = np.take(out, np.floor(pos + 0.5).astype(np.intp), axis=axis)
        elif order == 1:
            lo = np.floor(pos).astype(np.intp)
            hi = np.minimum(lo + 1, array.shape[axis] - 1)
            w = (pos - lo).astype(np.float32)
            bshape = [1, 1, 1]
            bshape[axis] = -1
            w = w.reshape(bshape)
            a, b = np.take(out, lo, axis=axis), np.take(out, hi, axis=axis)
            out = a + (b - a) * w
        else:
            raise ValueError(f"order {order} is not supported; use 0 (labels) or 1 (images)")
        if outside.any():
            index = [slice(None)] * 3
            index[axis] = outside
            out[tuple(index)] = cval
    return np.ascontiguousarray(out.astype(array.dtype, copy=False))
