"""Files with the same content under other names: one study listed twice.

A cohort can list one study twice: exported again under a second patient id (a pseudonymisation run
twice), or TotalSegmentator's output of a test study saved again in a folder a ``generate_from`` dataset
reads. Ids cannot tell; content can. The same bytes: sizes first (free), a SHA-256 only where two sizes
match. The same voxels on the same grid, for a map saved again with other bytes, data type or axis order:
grids from the headers first (as RAS+), the voxels only where two grids match. Each file is read once; on
a 1000-study cohort the sizes and the grids settle almost every file.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, Iterable, Mapping

# Read in pieces: an image of a few hundred MB never sits in memory whole.
HASH_CHUNK = 1 << 20


def hash_file(path: Path, algos: list[str]) -> dict[str, str]:
    """Digests of the whole file; hashing after the fact keeps resume and retries simple."""
    hashers = {algo: hashlib.new(algo) for algo in algos}
    with path.open("rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            for h in hashers.values():
                h.update(chunk)
    return {algo: h.hexdigest() for algo, h in hashers.items()}


def digests() -> Callable[[str], str]:
    """A file's SHA-256, each file read once."""
    known: dict[str, str] = {}

    def digest(path: str) -> str:
        if path not in known:
            known[path] = hash_file(Path(path), ["sha256"])["sha256"]
        return known[path]
    return digest


def identical_groups(paths: Iterable[str | Path], digest: Callable[[str], str] | None = None) -> list[list[str]]:
    """Groups (each sorted, of two or more) of the regular files among ``paths`` with the same bytes; a
    folder (a DICOM series) or a missing file is in none. Sorted by their first file."""
    return _groups(paths, lambda path: Path(path).stat().st_size, digest or digests())


def voxel_groups(paths: Iterable[str | Path], digest: Callable[[str], str] | None = None) -> list[list[str]]:
    """Groups (as ``identical_groups``) of the NIfTI files among ``paths`` with the same voxel values on the
    same grid (shape and affine), whatever their bytes: a map saved again (another compression, ``.nii`` for
    ``.nii.gz``, another data type or header field). Grids from the headers first, the voxels of a file only
    where another shares its grid (unrelated studies' origins differ), each file read once."""
    return _groups(paths, nifti_grid, digest or voxel_digests())


def _groups(paths: Iterable[str | Path], first: Callable[[str], object],
            digest: Callable[[str], str]) -> list[list[str]]:
    """Files with the same ``digest`` among those of the same ``first`` key (a cheap one: None leaves a file
    out), ``digest`` computed only where two keys match."""
    by_key: dict[object, set[str]] = {}
    for path in {str(p) for p in paths if p}:
        if Path(path).is_file() and (key := first(path)) is not None:
            by_key.setdefault(key, set()).add(path)
    groups = []
    for files in by_key.values():
        if len(files) < 2:
            continue
        by_digest: dict[str, list[str]] = {}
        for path in sorted(files):
            by_digest.setdefault(digest(path), []).append(path)
        groups += [same for same in by_digest.values() if len(same) > 1]
    return sorted(groups)


def nifti_grid(path: str) -> tuple | None:
    """(shape, affine to 1e-3 mm) of a NIfTI's grid stored as RAS+ (``_canonical``: a study saved again in
    DICOM's LPS order, or any other axis order, is the same grid), from its header; None for a file nibabel
    cannot read (a DICOM file, a broken one: read, and refused, by its own stage)."""
    import nibabel as nib  # here: the config checks import this module at every Snakemake start
    import numpy as np

    try:
        image = nib.load(path)  # the header only
    except Exception:
        return None
    _, shape, affine = _canonical(image.shape, image.affine)
    return shape, tuple(np.round(affine, 3).ravel())


def _canonical(shape: tuple, affine) -> tuple:
    """(orientation, shape, affine) of the grid reordered to RAS+ as nibabel's closest canonical does (axes
    swapped and flipped, no resampling); an affine with no axis to each direction stays as stored."""
    import numpy as np
    from nibabel.orientations import inv_ornt_aff, io_orientation

    ornt = io_orientation(affine)
    if len(shape) < 3 or np.isnan(ornt).any():
        return None, tuple(shape), affine
    ras = list(shape)
    for stored, (axis, _) in enumerate(ornt):
        ras[int(axis)] = shape[stored]
    return ornt, tuple(ras), affine @ inv_ornt_aff(ornt, shape[:3])


def voxel_digest(path: str) -> str:
    """SHA-256 of a NIfTI's voxel values in RAS+ order (``_canonical``), the same for the same values in any
    data type and axis order on disk: whole values in the smallest integer type that holds their range,
    others as float64."""
    import nibabel as nib
    import numpy as np
    from nibabel.orientations import apply_orientation

    try:
        image = nib.load(path)
        values = np.asanyarray(image.dataobj)
    except Exception:  # a header over broken voxels (a cut-off download): in no group; its own stage refuses it
        return f"unreadable: {path}"
    ornt, _, _ = _canonical(values.shape, image.affine)
    if ornt is not None:
        values = apply_orientation(values, ornt)  # a view: axes swapped and flipped, nothing copied
    # Slab by slab along the last axis: a scaled CT is float64 already (~630 MB at 512 x 512 x 300); whole-array
    # temporaries would double and triple it.
    slabs = [values[..., k] for k in range(values.shape[-1])] if values.ndim else [values]
    if values.dtype.kind == "f" and not all(np.array_equal(s, np.round(s)) for s in slabs):
        kind = np.dtype("<f8")
    else:
        low, high = (int(values.min()), int(values.max())) if values.size else (0, 0)
        kind = np.dtype(np.result_type(np.min_scalar_type(low), np.min_scalar_type(high))).newbyteorder("<")
    digest = hashlib.sha256(f"{values.shape}{kind.str}".encode())
    for slab in slabs:
        digest.update(slab.astype(kind).tobytes())
    return digest.hexdigest()


def voxel_digests() -> Callable[[str], str]:
    """A NIfTI's ``voxel_digest``, each file read once."""
    known: dict[str, str] = {}

    def digest(path: str) -> str:
        if path not in known:
            known[path] = voxel_digest(path)
        return known[path]
    return digest


def copies_of(files: Iterable[str | Path], originals: Iterable[str | Path]) -> dict[str, str]:
    """file -> the original whose bytes it has, for each of ``files`` that is one of ``originals`` or a copy
    of one (the first original of its bytes, by name)."""
    files, originals = {str(f) for f in files if f}, sorted({str(o) for o in originals if o})
    known = set(originals)
    found = {f: f for f in files if f in known}
    for group in identical_groups([*files, *originals]):
        original = next((f for f in group if f in known), None)
        found.update({f: original for f in group if original and f in files and f not in found})
    return found


def copies_and_resaves(files: Iterable[str | Path], originals: Iterable[str | Path]) -> tuple[dict, dict]:
    """(``copies_of``, ``voxel_copies_of`` of the files no byte comparison matched): which of ``files`` copy
    which ``originals``, by bytes, and which hold an original's voxels saved again with other bytes."""
    files = {str(f) for f in files if f}
    copies = copies_of(files, originals)
    return copies, voxel_copies_of(files - set(copies), originals)


def series_key(folder: str, named: str | None = None) -> str | None:
    """The SeriesInstanceUID a DICOM folder is read for: the one its cases table names, else that of its
    first file (by name) that holds one; None for a folder without a readable DICOM file."""
    if named:
        return named
    from medsynth.io.dicom import series_uid_of  # here: SimpleITK; the config checks import this module

    return next((uid for f in sorted(Path(folder).iterdir()) if f.is_file() and (uid := series_uid_of(f))), None)


def series_groups(folders: Mapping[str, str | None]) -> list[list[str]]:
    """Groups (as ``identical_groups``) of DICOM series folders (folder -> the series its cases table names,
    or None) that hold one series by its SeriesInstanceUID (``series_key``: one file's header per folder).
    A study exported again to another folder has other paths and often other file names, which bytes
    cannot match, but keeps its UID, DICOM's own identity of a series (a tool that rewrites UIDs hides it)."""
    by_uid: dict[str, list[str]] = {}
    for folder, named in folders.items():
        if Path(folder).is_dir() and (uid := series_key(folder, named)):
            by_uid.setdefault(uid, []).append(folder)
    return sorted(sorted(group) for group in by_uid.values() if len(group) > 1)


def shared_files(owners: Mapping[str, set[str]], voxels: Iterable[str] = (),
                 series: Mapping[str, str | None] | None = None) -> list[tuple[list[str], set[str]]]:
    """(files, their owners together) for each group of ``owners``' files (file -> the cases or patients
    that list it) with the same bytes, or (those among ``voxels``) the same voxels on the same grid
    (``voxel_groups``), or (the DICOM folders among ``series``, as ``series_groups``) one DICOM series, and
    for each file listed by several owners on its own (its bytes are its own twin)."""
    folders = {f: named for f, named in (series or {}).items() if f in owners}
    groups = _merged(identical_groups(owners) + voxel_groups(set(voxels) & set(owners)) + series_groups(folders))
    grouped = {f for group in groups for f in group}
    groups += [[f] for f in sorted(owners) if len(owners[f]) > 1 and f not in grouped]
    return [(group, set().union(*(owners[f] for f in group))) for group in groups]


def _merged(groups: list[list[str]]) -> list[list[str]]:
    """Groups joined where they share a file (a map in a group by bytes and in one by voxels)."""
    merged: list[set[str]] = []
    for group in map(set, groups):
        for other in [m for m in merged if m & group]:
            merged.remove(other)
            group |= other
        merged.append(group)
    return sorted(sorted(g) for g in merged)


def voxel_copies_of(files: Iterable[str | Path], originals: Iterable[str | Path]) -> dict[str, str]:
    """file -> an original (the first by name) with the same voxel values on the same grid but other bytes
    (``voxel_groups``), for NIfTI ``files`` that no byte comparison matched: a map saved again. Each file is
    read once, however many originals share its grid (a cohort resampled to one grid: all of them)."""
    files, known = {str(f) for f in files if f}, {str(o) for o in originals if o}
    found = {}
    for group in voxel_groups(files | known):
        for path in set(group) & files:
            original = next((o for o in group if o in known and o != path), None)
            if original:
                found[path] = original
    return found
