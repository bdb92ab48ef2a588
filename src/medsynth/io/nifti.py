"""NIfTI input/output that never loses or invents geometry.

Every volume travels with its 4x4 voxel-to-world affine; writers take the
affine explicitly so no caller can fall back to an identity matrix.
"""

from __future__ import annotations

import gzip
import logging
import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np
from isal import igzip, isal_zlib

from medsynth.io.atomic import replacing
from medsynth.io.volume import Volume, VolumeError, voxel_spacing  # noqa: F401 (their home for readers)

# Intel ISA-L's gzip: the same .nii.gz bytes any reader understands, but inflating
# is ~2x and deflating at level 1 ~7x faster than zlib, which nibabel uses. On a
# 400 x 400 x 300 CT that is most of the preprocessing I/O time.
GZIP_LEVEL = 1
# How far a float label map's value may lie from an integer (float32 storage of a label written as float).
LABEL_ROUNDING = 1e-3
# How far a header's qform may lie from its sform (mm, or per unit of direction): float32 rounding of the
# quaternion, not another placement.
QFORM_TOLERANCE = 1e-2
log = logging.getLogger(__name__)


def load_volume(path: str | Path, dtype: np.dtype | type | None = None, series_uid: str | None = None,
                stored_order: bool = False) -> Volume:
    """Load a 3D NIfTI volume, or the DICOM series in a folder (``medsynth.io.dicom``; ``series_uid``
    picks one where the folder holds several), refusing anything we could silently misread.

    The array is C-ordered, as the stages index it, unless ``stored_order``: a NIfTI's then stays in the
    file's Fortran order (no transposing copy; its axial slices are contiguous).

    ``dtype`` selects the in-memory type: labels use an integer type so values
    are never interpolated, images use float32 (never float64: 2x the memory
    for no precision a CT or MR has).
    """
    path = Path(path)
    if path.is_dir():
        from medsynth.io.dicom import load_series  # on first use: SimpleITK costs every other job's start

        series = load_series(path, series_uid)
        return Volume(_as_dtype(series.array, dtype, path), series.affine, path)
    if not path.is_file():
        raise VolumeError(f"{path}: file not found")
    try:
        img, data = _read(path)
    except (OSError, EOFError, zlib.error, isal_zlib.error, gzip.BadGzipFile, nib.filebasedimages.ImageFileError,
            nib.wrapstruct.WrapStructError, nib.spatialimages.HeaderDataError) as exc:
        raise VolumeError(f"{path}: not a readable NIfTI volume ({exc}); re-export or re-download it") from exc
    if data.ndim > 3 and all(n == 1 for n in data.shape[3:]):  # (x, y, z, 1) and (x, y, z, 1, 1): one volume
        data = data.reshape(data.shape[:3])
    if data.ndim != 3:
        what = ("a single slice: medsynth needs the whole scan" if data.ndim < 3 else
                "several volumes (a time series or channels): split them into one file each")
        raise VolumeError(f"{path}: expected a 3D volume, found shape {data.shape}: {what}")
    data = _as_dtype(data, dtype, path)
    return Volume(data if stored_order else c_order(data), _oriented_affine(img, path), path)


def _oriented_affine(img: nib.spatialimages.SpatialImage, path: Path) -> np.ndarray:
    """The image's affine, refusing a header that states no orientation and warning where its two disagree.

    With sform_code and qform_code 0, nibabel makes an affine up from the voxel sizes (other readers make up
    others): which side is the patient's right is unknown, and outputs written with that affine would claim
    it. Where both are set and differ, nibabel takes the sform and ITK-based tools (ITK-SNAP, SimpleITK, so
    nnU-Net) may take the qform: the same file overlays differently there."""
    header = img.header
    codes = {k: int(header[k]) for k in ("sform_code", "qform_code") if k in header}
    if codes and not any(codes.values()):
        raise VolumeError(f"{path}: its header states no orientation (sform_code and qform_code 0), so where the "
                          "patient's right lies is unknown; convert the scan again from its DICOM series (or give "
                          "medsynth the DICOM folder), or set the header's sform to the scanner's affine")
    affine = np.asarray(img.affine, dtype=np.float64)
    if codes.get("sform_code") and codes.get("qform_code"):
        offset = float(np.abs(header.get_sform() - header.get_qform()).max())
        if offset > QFORM_TOLERANCE:
            log.warning("%s: its sform and qform differ (by up to %.3g mm); medsynth uses the sform, as nibabel does, "
                        "and writes it as both; ITK-based tools may read this file by its qform", path, offset)
    return affine


def _as_dtype(data: np.ndarray, dtype: np.dtype | type | None, path: Path) -> np.ndarray:
    """``data`` in the in-memory type ``load_volume`` was asked for, refusing lossy conversions."""
    if dtype is not None:
        # dtype=np.integer: any integer type, the file's own when it has one (no copy of a large label map).
        want_int = dtype is np.integer or np.issubdtype(np.dtype(dtype), np.integer)
        if want_int and np.issubdtype(data.dtype, np.floating):
            rounded = np.rint(data)
            # One absolute tolerance for every value (allclose's relative one let 117.0005 pass, not 0.0005).
            off = np.abs(rounded - data) > LABEL_ROUNDING
            if off.any():
                example = data.flat[int(np.argmax(off.ravel()))]
                raise VolumeError(f"{path}: label map holds non-integer values (e.g. {example:g}); is it an image "
                                  "(image and label swapped?), or a label map resampled with interpolation?")
            data = rounded
        if dtype is np.integer:
            target = data.dtype if np.issubdtype(data.dtype, np.integer) else np.dtype(np.int32)
        else:
            target = np.dtype(dtype)
        if np.issubdtype(target, np.integer) and data.dtype != target and data.size:
            info = np.iinfo(target)
            lo, hi = data.min(), data.max()
            if lo < info.min or hi > info.max:
                raise VolumeError(f"{path}: values {lo}..{hi} do not fit {target.name}; "
                                  "label values must lie in the label table's range")
        data = data.astype(target, copy=False)
    if np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).all():
        raise VolumeError(f"{path}: contains NaN or infinite voxels")
    return data


def default_workers() -> int:
    """Threads for volume work that releases the GIL ((de)compression, copies, scipy.ndimage): the job's
    share, not the node's. Snakemake sets OMP_NUM_THREADS to a job's threads (its SLURM CPUs); without
    it, the CPUs this process may run on (a cgroup's, not os.cpu_count()'s whole node). At most 4."""
    share = os.environ.get("OMP_NUM_THREADS", "")
    if share.isdigit() and int(share) > 0:
        return min(4, int(share))
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(4, cpus or 1))


def c_order(data: np.ndarray, workers: int | None = None, tile: int = 32) -> np.ndarray:
    """A C-ordered copy of a NIfTI array (which arrives in Fortran order, x fastest).

    numpy's own transposing copy strides through memory and costs as much as
    inflating the file; copying (x, y) tiles through all of z stays in cache,
    and threads share the tiles (the copy releases the GIL).
    """
    if data.flags.c_contiguous or data.ndim != 3:
        return np.ascontiguousarray(data)
    out = np.empty(data.shape, dtype=data.dtype)

    def rows(x: int) -> None:
        for y in range(0, data.shape[1], tile):
            out[x : x + tile, y : y + tile] = data[x : x + tile, y : y + tile]

    workers = workers or default_workers()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(rows, range(0, data.shape[0], tile)))
    return out


def save_volume(path: str | Path, array: np.ndarray, affine: np.ndarray) -> Path:
    """Write ``array`` with ``affine`` (both sform and qform set, millimetres)."""
    path = Path(path)
    make_dir(path.parent)
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        raise ValueError(f"{path}: refusing to write an invalid affine {affine!r}")
    img = nib.Nifti1Image(np.asarray(array), affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    img.header.set_xyzt_units("mm")
    # The name, then ``.part`` and the format's ending again (nibabel reads the format from it); not every
    # suffix: a case id with dots (DICOM UIDs) doubled the name past the file system's 255 bytes.
    with replacing(path, path.name + ".part" + nifti_ending(path)) as tmp:
        if path.name.endswith(".nii.gz"):
            with igzip.open(tmp, "wb", compresslevel=GZIP_LEVEL) as stream:
                img.to_file_map(_single_file_map(stream))
        else:
            nib.save(img, str(tmp))
    return path


NIFTI_ENDINGS = (".nii.gz", ".nii")


def nifti_ending(path: str | Path) -> str:
    """``.nii.gz`` or ``.nii`` as the file's name ends, else ``""`` (``Path.suffixes`` would take every dot)."""
    return next((e for e in NIFTI_ENDINGS if Path(path).name.endswith(e)), "")


def nifti_stem(path: str | Path) -> str:
    """A NIfTI file's name without ``.nii.gz`` / ``.nii``: the whole rest, dots included (``pat01.study2``,
    DICOM UIDs), so names that differ only after a first dot stay apart."""
    name = Path(path).name
    return name[: len(name) - len(nifti_ending(name))]


def _single_file_map(stream) -> dict:
    """A single-file NIfTI (header and voxels in one stream), for nibabel's file-map interface."""
    return {"header": nib.FileHolder(fileobj=stream), "image": nib.FileHolder(fileobj=stream)}


def _read(path: Path) -> tuple[nib.Nifti1Image, np.ndarray]:
    if path.name.endswith(".nii.gz"):
        with igzip.open(path, "rb") as stream:
            # sizeof_hdr, in either byte order, tells NIfTI-1 (348) from NIfTI-2 (540).
            head = stream.read(4)
            stream.seek(0)
            sizes = {int.from_bytes(head, "little"), int.from_bytes(head, "big")}
            if not sizes & {348, 540}:
                raise nib.filebasedimages.ImageFileError("no NIfTI-1 or NIfTI-2 header at the start of the data")
            klass = nib.Nifti2Image if 540 in sizes else nib.Nifti1Image
            img = klass.from_file_map(_single_file_map(stream))
            return img, np.asanyarray(img.dataobj)
    img = nib.load(str(path))  # .nii (memory-mapped) and other formats nibabel knows
    return img, np.asanyarray(img.dataobj)


def make_dir(folder: Path) -> Path:
    """Create an output folder, or say which one cannot be created and why."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(f"{folder}: cannot create output folder ({exc.strerror or exc}); "
                      "check the path, permissions and free space") from exc
    if not os.access(folder, os.W_OK):
        raise OSError(f"{folder}: output folder is not writable; check permissions")
    return folder


def check_same_grid(a: Volume, b: Volume, atol: float = 1e-3) -> None:
    """Raise naming both files when two volumes do not share one voxel grid."""
    if a.array.shape != b.array.shape:
        raise VolumeError(f"{a.path} and {b.path}: shapes differ ({a.array.shape} vs {b.array.shape})")
    diff = np.abs(a.affine - b.affine).max()
    if diff > atol:
        raise VolumeError(
            f"{a.path} and {b.path}: affines differ by up to {diff:.4g} (tolerance {atol}); "
            "register or resample them onto one grid first"
        )
