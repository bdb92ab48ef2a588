"""Label maps that share slices: one study cropped, or cut into two, under two patient ids.

``same_files`` finds a study saved again whole: the same bytes, the same voxels on the same grid, one DICOM
series. A study exported again with fewer slices (a re-export of the abdomen only) or with air cropped
around the body has another grid and other voxels, yet each of its axial slices counts the same voxels
of every label as the original's slice it came from. Two studies of different patients never do over a
run of slices: a slice's counts of a dozen organs are its anatomy's fingerprint, and requiring
``RUN`` distinct prints at one offset along the body axis rules out a chance match even where a map has one
label, and a match on a structure that looks the same on every slice.

A map resampled to another spacing, or cropped through its labels, counts otherwise and is not found here
(the memorisation audits compare what a generator made with the test split's slices).
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Iterable

log = logging.getLogger(__name__)

# A slice with fewer labelled voxels (the top or the bottom of a map) says too little to match on.
MIN_VOXELS = 100
# Slices alike at one offset along the body axis: a cropped copy shares all of its own.
RUN = 5


def slice_prints(path: str | Path) -> tuple[tuple, list[bytes | None]] | None:
    """(in-plane spacing, per axial slice inferior to superior its print) of a label map (NIfTI, or a
    DICOM folder): a digest of its voxel count of each label value, None for a slice with fewer than
    ``MIN_VOXELS`` labelled voxels. None for a map that cannot be read, has no axis along the body or
    negative values (its own stage refuses or reports those)."""
    import numpy as np  # here: the config checks import the split module at every Snakemake start
    from nibabel.orientations import io_orientation

    from medsynth.io.nifti import load_volume, voxel_spacing

    try:
        # As stored: a NIfTI's axial slices are then contiguous (x fastest), read without a transposing copy.
        volume = load_volume(path, np.integer, stored_order=True)
    except Exception:  # noqa: BLE001 -- unreadable, not 3D, not whole numbers, a DICOM folder SimpleITK refuses:
        return None  # a check never stops a stage over a map; the map's own stage names what is wrong with it
    ornt = io_orientation(volume.affine)
    if np.isnan(ornt).any() or (volume.array.size and volume.array.min() < 0):
        return None
    axis = int(np.flatnonzero(ornt[:, 0] == 2)[0])  # the stored axis along inferior-superior
    spacing = tuple(sorted(round(float(s), 2) for i, s in enumerate(voxel_spacing(volume.affine)) if i != axis))
    prints = []
    for plane in np.moveaxis(volume.array, axis, 0)[:: int(ornt[axis, 1])]:
        counts = np.bincount(plane.ravel(order="K"))
        counts[0] = 0  # background: how much air a crop left is no part of the print
        prints.append(None if counts.sum() < MIN_VOXELS else
                      hashlib.blake2b(np.trim_zeros(counts, "b").astype("<i8").tobytes(), digest_size=12).digest())
    return spacing, prints


def overlapping_maps(paths: Iterable[str | Path]) -> list[tuple[str, str, int]]:
    """(map, map, slices alike) for each pair of the label maps in ``paths`` that share at least ``RUN``
    distinct slice prints at one offset along the body axis (and the in-plane spacing), sorted. Each map is
    read once, one at a time."""
    from tqdm import tqdm  # here, as numpy: the config checks import this module

    where: dict[tuple, list[tuple[str, int]]] = {}
    # Every map is read: ~0.3 s for one of AutoPET's size, minutes for its 1014 in the split job.
    files, start = sorted({str(p) for p in paths if p and Path(p).exists()}), time.perf_counter()
    for path in tqdm(files, desc="slices alike", unit="map"):
        read = slice_prints(path)
        if read is None:
            continue
        spacing, prints = read
        for z, digest in enumerate(prints):
            if digest is not None:
                where.setdefault((spacing, digest), []).append((path, z))
    # Distinct prints, not slices: a structure the same on every slice (a scanner's table labelled in two
    # patients' maps, slices repeated by a resampling) matches at every offset with one print.
    runs: dict[tuple[str, str, int], set[bytes]] = {}
    for (_, digest), places in where.items():
        for i, (a, za) in enumerate(places):
            for b, zb in places[i + 1:]:
                if a != b:
                    runs.setdefault((a, b, zb - za), set()).add(digest)
    best: dict[tuple[str, str], int] = {}
    for (a, b, _), digests in runs.items():
        best[(a, b)] = max(best.get((a, b), 0), len(digests))
    found = sorted((a, b, n) for (a, b), n in best.items() if n >= RUN)
    log.info("slices alike: %d label maps read in %.0f s, %d pairs share %d or more slices", len(files),
             time.perf_counter() - start, len(found), RUN)
    return found


def cropped_copies_of(files: Iterable[str | Path], originals: Iterable[str | Path]) -> dict[str, tuple[str, int]]:
    """file -> (an original, the slices they share) for each of the label maps ``files`` that shares a run of
    slices with one of ``originals`` (``overlapping_maps``; the first original by name): a map cropped from
    it, or it from the map, under another id."""
    files, known = {str(f) for f in files if f}, {str(o) for o in originals if o}
    found: dict[str, tuple[str, int]] = {}
    for a, b, n in overlapping_maps(files | known):
        for copy, original in ((a, b), (b, a)):
            if copy in files and original in known and copy not in found:
                found[copy] = (original, n)
    return found
