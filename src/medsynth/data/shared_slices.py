"""Label maps that share slices: one study cropped and saved again under another patient id.

``same_files`` finds a study saved again whole: the same bytes, the same voxels on the same grid, one DICOM
series. A study exported again with fewer slices (a re-export of the abdomen only) or with air cropped
around the body has another grid and other voxels, yet each of its axial slices counts the same voxels
of every label as the original's slice it came from. Two studies of different patients never do over a
run of slices: a slice's counts of a dozen organs are its anatomy's fingerprint. Requiring ``RUN``
distinct prints alike at one offset along the body axis, and ``COVERAGE`` of the slices printed over the
two maps' overlap, rules out a chance match where a map has one label (an area alike here and there), and
a match on a structure that looks the same on every slice.

A map resampled to another spacing, or cropped through its labels, counts otherwise and is not found here
(the memorisation audits compare what a generator made with the test split's slices).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Iterable

from medsynth.data.same_files import copies_and_resaves

log = logging.getLogger(__name__)

# A slice with fewer labelled voxels (the top or the bottom of a map) says too little to match on.
MIN_VOXELS = 100
# Slices alike at one offset along the body axis: a cropped copy shares all of its own.
RUN = 5
# The share of the slices printed in either map over their overlap that must be alike: all for a crop.
COVERAGE = 0.8
# A print found in more maps is no fingerprint (a structure alike in many, such as a labelled table).
COMMON = 8
# Above this label value a slice's counts are found by sorting (TotalSegmentator's ids are far below).
LARGEST_COUNTED = 1 << 16


def slice_prints(path: str | Path) -> tuple[tuple, list[bytes | None]] | None:
    """(in-plane spacing, per axial slice inferior to superior its print) of a label map (NIfTI, or a
    DICOM folder): a digest of its voxel count of each label value, None for a slice with fewer than
    ``MIN_VOXELS`` labelled voxels. None for a map that cannot be read, has no axis along the body or
    negative values (its own stage refuses or reports those). Once per file and process (its path, size
    and time): the export asks for the test maps' twice."""
    try:
        stat = Path(path).stat()
    except OSError:
        return None
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _PRINTS:
        _PRINTS[key] = _read_prints(path)
    return _PRINTS[key]


_PRINTS: dict[tuple, tuple[tuple, list[bytes | None]] | None] = {}


def _read_prints(path: str | Path) -> tuple[tuple, list[bytes | None]] | None:
    import numpy as np  # here: the config checks import the split module at every Snakemake start
    from nibabel.orientations import io_orientation

    from medsynth.io.nifti import load_volume, voxel_spacing

    try:
        # As stored: a NIfTI's axial slices are then contiguous (x fastest), read without a transposing copy.
        volume = load_volume(path, np.integer, stored_order=True)
    except Exception:  # noqa: BLE001 -- unreadable, not 3D, not whole numbers, a DICOM folder SimpleITK refuses:
        return None  # a check never stops a stage over a map; the map's own stage names what is wrong with it
    ornt, array = io_orientation(volume.affine), volume.array
    if np.isnan(ornt).any() or not array.size or array.min() < 0:
        return None
    axis = int(np.flatnonzero(ornt[:, 0] == 2)[0])  # the stored axis along inferior-superior
    spacing = tuple(sorted(float(s) for i, s in enumerate(voxel_spacing(volume.affine)) if i != axis))
    large = int(array.max()) > LARGEST_COUNTED  # bincount would hold a count for every value up to it
    prints = []
    for plane in np.moveaxis(array, axis, 0)[:: int(ornt[axis, 1])]:
        # (label values, their counts), background left out (how much air a crop left is no part of the
        # print); the same bytes by either way of counting, so a crop that lost the largest value matches.
        if large:
            values, counts = np.unique(plane[plane > 0], return_counts=True)
        else:
            counted = np.bincount(plane.ravel(order="K"))
            values = np.flatnonzero(counted[1:]) + 1
            counts = counted[values]
        prints.append(None if int(counts.sum()) < MIN_VOXELS else hashlib.blake2b(
            np.concatenate([values, counts]).astype("<i8").tobytes(), digest_size=12).digest())
    return spacing, prints


def overlapping_maps(paths: Iterable[str | Path]) -> list[tuple[str, str, int]]:
    """(map, map, slices alike) for each pair of the label maps in ``paths`` (sorted by name) that share at
    least ``RUN`` distinct slice prints at one offset along the body axis, where those are at least
    ``COVERAGE`` of the slices printed in either over their overlap, on one in-plane spacing; sorted. Each
    map is read once, one at a time."""
    from tqdm import tqdm  # here, as numpy: the config checks import this module

    files, start = sorted({str(p) for p in paths if p and Path(p).exists()}), time.perf_counter()
    # Every map is read: ~0.3 s for one of AutoPET's size, minutes for its 1014 in the split job.
    prints = {p: read for p in tqdm(files, desc="slices alike", unit="map") if (read := slice_prints(p))}
    best: dict[tuple[str, str], int] = {}  # a pair's most slices alike over its offsets
    for (a, b, offset), n in _candidates(prints).items():
        if n >= RUN and _close(prints[a][0], prints[b][0]):
            alike = _alike(prints[a][1], prints[b][1], offset)
            if alike is not None:
                best[(a, b)] = max(best.get((a, b), 0), alike)
    log.info("slices alike: %d label maps read in %.0f s, %d pairs share %d or more slices", len(files),
             time.perf_counter() - start, len(best), RUN)
    return sorted((a, b, n) for (a, b), n in best.items())


def _candidates(prints: dict[str, tuple[tuple, list]]) -> Counter:
    """(map, later map, offset) -> the distinct prints they share there. Distinct: a structure the same on
    every slice (a scanner's table labelled in two maps, slices repeated by a resampling) matches at every
    offset with one print. A print in more than ``COMMON`` maps is left out: no fingerprint, and its pairs
    would grow with the square of their number."""
    where: dict[bytes, list[tuple[str, int]]] = {}
    for path, (_, digests) in prints.items():
        for z, digest in enumerate(digests):
            if digest is not None:
                where.setdefault(digest, []).append((path, z))
    shared: Counter = Counter()
    for places in where.values():
        if len({p for p, _ in places}) > COMMON:
            continue
        shared.update({(a, b, zb - za) for i, (a, za) in enumerate(places) for b, zb in places[i + 1:] if a != b})
    return shared


def _close(first: tuple, second: tuple) -> bool:
    """One in-plane spacing, to float32's rounding of a header (a DICOM-derived affine against a NIfTI's)."""
    return len(first) == len(second) and all(abs(x - y) <= 1e-3 * max(x, y, 1.0) for x, y in zip(first, second))


def _alike(first: list, second: list, offset: int) -> int | None:
    """The slices alike where ``second``'s slice z + ``offset`` lies on ``first``'s z, if they are at least
    ``COVERAGE`` of the slices printed in either there: a crop's every slice is its original's, while two
    patients' single-organ maps may share a few areas by chance among dozens that differ."""
    pairs = [(first[z], second[z + offset]) for z in range(max(0, -offset), min(len(first), len(second) - offset))]
    printed = [(x, y) for x, y in pairs if x is not None or y is not None]
    alike = sum(x == y for x, y in printed)
    return alike if printed and alike >= RUN and alike >= COVERAGE * len(printed) else None


def copies_resaves_and_crops(files: Iterable[str | Path], originals: Iterable[str | Path],
                             not_for_crops: Iterable[str] = ()) -> tuple[dict, dict, dict]:
    """Which of the label maps ``files`` come from which ``originals``, in three ways, each map in the first
    that finds it: ``same_files.copies_and_resaves`` (the same bytes; the same voxels saved again) and then,
    for the rest but ``not_for_crops``, ``cropped_copies_of``: generation's and the export's test-map checks."""
    files, originals = {str(f) for f in files if f}, [str(o) for o in originals if o]
    copies, saved_again = copies_and_resaves(files, originals)
    return copies, saved_again, cropped_copies_of(files - set(copies) - set(saved_again) - set(not_for_crops),
                                                  originals)


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
