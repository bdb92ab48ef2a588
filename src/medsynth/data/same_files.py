"""Files with the same bytes under other names: one study listed twice.

A cohort can list one study twice: exported again under a second patient id (a pseudonymisation run
twice), or TotalSegmentator's output of a test study saved again in a folder a ``generate_from`` dataset
reads. Ids cannot tell; bytes can. Sizes first (free), a SHA-256 only where two sizes match, each file
read once: on a 1000-study cohort the sizes alone settle almost every file.
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
    by_size: dict[int, set[str]] = {}
    for path in {str(p) for p in paths if p}:
        if Path(path).is_file():
            by_size.setdefault(Path(path).stat().st_size, set()).add(path)
    digest = digest or digests()
    groups = []
    for files in by_size.values():
        if len(files) < 2:
            continue
        by_digest: dict[str, list[str]] = {}
        for path in sorted(files):
            by_digest.setdefault(digest(path), []).append(path)
        groups += [same for same in by_digest.values() if len(same) > 1]
    return sorted(groups)


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


def shared_files(owners: Mapping[str, set[str]]) -> list[tuple[list[str], set[str]]]:
    """(files, their owners together) for each group of ``owners``' files (file -> the cases or patients
    that list it) with the same bytes, and for each file listed by several owners on its own (its bytes
    are its own twin)."""
    groups = identical_groups(owners)
    grouped = {f for group in groups for f in group}
    groups += [[f] for f in sorted(owners) if len(owners[f]) > 1 and f not in grouped]
    return [(group, set().union(*(owners[f] for f in group))) for group in groups]


def voxel_copies_of(files: Iterable[str | Path], originals: Iterable[str | Path]) -> dict[str, str]:
    """file -> an original with the same voxel values on the same grid (shape and affine) but other bytes,
    for NIfTI ``files`` that no byte comparison matched: a label map saved again (another compression level,
    ``.nii`` for ``.nii.gz``, another header field or data type). Headers first, the voxels of two maps only
    where their grids match, so unrelated studies (whose origins differ) cost one header read each."""
    import nibabel as nib  # here: the config checks import this module at every Snakemake start
    import numpy as np

    def opened(path: str):
        try:
            return nib.load(path)  # the header only: the voxels are read where a grid matches
        except Exception:  # a DICOM folder or an unreadable file: read (and refused) by its own stage
            return None

    def grid(image) -> tuple:
        return tuple(image.shape), tuple(np.round(image.affine, 3).ravel())

    by_grid: dict[tuple, list] = {}
    for original in sorted({str(o) for o in originals if o}):
        if (image := opened(original)) is not None:
            by_grid.setdefault(grid(image), []).append((original, image))
    found = {}
    for path in sorted({str(f) for f in files if f}):
        image = opened(path)
        candidates = [(o, other) for o, other in by_grid.get(grid(image), []) if o != path] if image else []
        voxels = np.asanyarray(image.dataobj) if candidates else None
        twin = next((o for o, other in candidates if np.array_equal(voxels, other.dataobj)), None)
        if twin:
            found[path] = twin
    return found
