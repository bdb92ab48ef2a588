"""3D -> 2D axial slices at the training size, cropped around the body.

Per case the slices are stored in one ``slices.npz`` (what training reads)
with, per slice, the z index and crop offset that put a generated slice back
into the preprocessed volume; PNGs are written for people.

Slice rule: an axial slice is kept when the body mask covers at least
``min_body_fraction`` of the cropped slice and at least one voxel carries a
class other than background. Preprocessed label maps give the body class to
every unlabelled voxel of the body, so there the body fraction decides. A
slice with less body is kept all the same when it carries a class no slice
kept by that rule carries: a narrow neck (the thyroid) or the head's top
fills little of a 50 cm crop, and without those slices training never sees
the class that generation paints.
With ``require`` (``slice.require_classes``) a slice must also carry one of
those classes: e.g. whole-body label maps keep only the pelvis that an image
dataset of pelvis scans covers.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from medsynth.io.atomic import replacing
from medsynth.io.heap import release_freed
from medsynth.io.images import display_view, save_png, unit_to_uint8

log = logging.getLogger("medsynth")


@dataclass(frozen=True)
class SliceSettings:
    size: int  # training images are size x size
    min_body_fraction: float = 0.05
    require: tuple[int, ...] = ()  # class ids a kept slice must carry one of (none: no such rule)


@dataclass
class CaseSlices:
    images: np.ndarray  # (n, size, size) float32 in [-1, 1]
    labels: np.ndarray  # (n, size, size) uint8 class ids
    masks: np.ndarray  # (n, size, size) uint8 body mask
    z: np.ndarray  # (n,) axial index in the preprocessed volume
    offsets: np.ndarray  # (n, 2) x0, y0: slice[i, j] = volume[x0 + i, y0 + j, z]
    # The kept slices' body voxels outside the crop and in all (a body wider than the crop: training sees it
    # cut); None where unknown (slices written before medsynth counted them).
    crop_cut: tuple[int, int] | None = None
    # Voxels of each class id (0-255) in the kept slices: which classes training sees, without reading the
    # labels (the model card sums them over the training cases); None where unknown, as crop_cut.
    class_voxels: np.ndarray | None = None

    def save(self, path: Path) -> Path:
        # np.savez adds .npz to a name without it; float16 halves the store, and [-1, 1] images lose nothing
        # visible at 8-bit display depth.
        with replacing(path, path.name + ".part.npz") as tmp:
            np.savez(
                tmp,
                images=self.images.astype(np.float16),
                labels=self.labels,
                masks=self.masks,
                z=self.z,
                offsets=self.offsets,
                **({} if self.crop_cut is None else {"crop_cut": np.array(self.crop_cut, dtype=np.int64)}),
                **({} if self.class_voxels is None else {"class_voxels": self.class_voxels.astype(np.int64)}),
            )
        return path

    @classmethod
    def load(cls, path: Path) -> "CaseSlices":
        release_freed()  # what the previous case freed goes back first: streaming stages stay flat (io.heap)
        with np.load(path) as f:
            return cls(f["images"].astype(np.float32), f["labels"], f["masks"], f["z"], f["offsets"],
                       crop_cut_of(f), class_voxels_of(f))


def crop_offset(mask: np.ndarray, size: int) -> tuple[int, int]:
    """Top-left corner of the size x size window centred on the body's bounding box (whole volume)."""
    if not mask.any():
        return (mask.shape[0] - size) // 2, (mask.shape[1] - size) // 2
    xs = np.flatnonzero(mask.any(axis=(1, 2)))
    ys = np.flatnonzero(mask.any(axis=(0, 2)))
    cx = (xs[0] + xs[-1] + 1) / 2.0
    cy = (ys[0] + ys[-1] + 1) / 2.0
    return int(round(cx - size / 2.0)), int(round(cy - size / 2.0))


def window(volume: np.ndarray, x0: int, y0: int, size: int, fill: float) -> np.ndarray:
    """volume[x0:x0+size, y0:y0+size, :] with ``fill`` wherever the window leaves the volume."""
    out = np.full((size, size, volume.shape[2]), fill, dtype=volume.dtype)
    sx0, sy0 = max(x0, 0), max(y0, 0)
    sx1, sy1 = min(x0 + size, volume.shape[0]), min(y0 + size, volume.shape[1])
    if sx1 > sx0 and sy1 > sy0:
        out[sx0 - x0 : sx1 - x0, sy0 - y0 : sy1 - y0] = volume[sx0:sx1, sy0:sy1]
    return out


def paste(volume: np.ndarray, patch: np.ndarray, x0: int, y0: int, z: int) -> None:
    """Inverse of ``window`` for one slice: write the part of ``patch`` that lies inside the volume."""
    size = patch.shape[0]
    sx0, sy0 = max(x0, 0), max(y0, 0)
    sx1, sy1 = min(x0 + size, volume.shape[0]), min(y0 + size, volume.shape[1])
    if sx1 > sx0 and sy1 > sy0:
        volume[sx0:sx1, sy0:sy1, z] = patch[sx0 - x0 : sx1 - x0, sy0 - y0 : sy1 - y0]


def axial_stack(volume: np.ndarray, x0: int, y0: int, size: int, fill: float, z: np.ndarray,
                tile: int = 32) -> np.ndarray:
    """``window(volume, x0, y0, size, fill)[:, :, z]`` with the slice axis first: shape (len(z), size, size).

    Axial slices of a C-ordered (x, y, z) volume are strided by the z length;
    gathering them in (x, y) tiles keeps each read in cache, several times
    faster than one transposing copy of the whole window.
    """
    out = np.full((len(z), size, size), fill, dtype=volume.dtype)
    sx0, sy0 = max(x0, 0), max(y0, 0)
    sx1, sy1 = min(x0 + size, volume.shape[0]), min(y0 + size, volume.shape[1])
    for x in range(sx0, sx1, tile):
        xe = min(x + tile, sx1)
        for y in range(sy0, sy1, tile):
            ye = min(y + tile, sy1)
            out[:, x - x0 : xe - x0, y - y0 : ye - y0] = np.moveaxis(volume[x:xe, y:ye][:, :, z], 2, 0)
    return out


def slice_case(image: np.ndarray, label: np.ndarray, mask: np.ndarray, settings: SliceSettings) -> CaseSlices:
    size = settings.size
    x0, y0 = crop_offset(mask > 0, size)
    label, mask = label.astype(np.uint8, copy=False), mask.astype(np.uint8, copy=False)
    body_fraction = window(mask, x0, y0, size, 0).mean(axis=(0, 1))
    cropped = window(label, x0, y0, size, 0)
    has_labels = (cropped > 0).any(axis=(0, 1))
    if settings.require:
        has_labels &= np.isin(cropped, settings.require).any(axis=(0, 1))
    bodied = (body_fraction >= settings.min_body_fraction) & has_labels
    keep = np.flatnonzero(bodied | _only_classes_here(cropped, bodied, has_labels))
    cut = _cut_body(mask, body_fraction, keep, size)
    labels = axial_stack(label, x0, y0, size, 0, keep)
    return CaseSlices(
        images=axial_stack(image.astype(np.float32, copy=False), x0, y0, size, -1.0, keep),
        labels=labels,
        masks=axial_stack(mask, x0, y0, size, 0, keep),
        z=keep.astype(np.int32),
        offsets=np.tile(np.array([[x0, y0]], dtype=np.int32), (len(keep), 1)),
        crop_cut=cut,
        class_voxels=np.bincount(labels.reshape(-1), minlength=256),
    )


def _only_classes_here(cropped: np.ndarray, bodied: np.ndarray, has_labels: np.ndarray) -> np.ndarray:
    """Per axial slice: labelled, too little body, and carrying a class that no slice with enough body
    (``bodied``) carries in this case; logged, since the body rule alone would drop them."""
    seen = np.bincount(cropped[:, :, bodied].reshape(-1), minlength=256) > 0
    seen[0] = True  # background is no class to keep a slice for
    only, classes = np.zeros_like(bodied), set()
    for z in np.flatnonzero(has_labels & ~bodied):
        unseen = [int(c) for c in np.unique(cropped[:, :, z]) if not seen[c]]
        only[z] = bool(unseen)
        classes.update(unseen)
    if only.any():
        log.warning("kept %d slice(s) with less body than slice.min_body_fraction (z %s): only they carry class "
                    "id(s) %s in this case", int(only.sum()), np.flatnonzero(only).tolist(), sorted(classes))
    return only


def crop_cut_of(npz) -> tuple[int, int] | None:
    """``CaseSlices.crop_cut`` from an open ``slices.npz`` (None: written before medsynth counted it)."""
    return tuple(int(v) for v in npz["crop_cut"]) if "crop_cut" in npz.files else None


def class_voxels_of(npz) -> np.ndarray | None:
    """``CaseSlices.class_voxels`` from an open ``slices.npz`` (None: written before medsynth counted them)."""
    return npz["class_voxels"] if "class_voxels" in npz.files else None


def summed_class_voxels(files: Sequence[str | Path]) -> np.ndarray | None:
    """``class_voxels`` summed over ``files`` (``slices.npz``, their counts only); None when one predates them."""
    total = np.zeros(256, dtype=np.int64)
    for path in files:
        with np.load(path) as npz:
            counts = class_voxels_of(npz)
        if counts is None:
            return None
        total[: len(counts)] += counts
    return total


def unlearnt_classes(files: Sequence[str | Path], names: Sequence[str]) -> list[str] | None:
    """"name (id)" of each class but background (id 0) in no slice of ``files`` (a training set's
    ``slices.npz``); None when a file predates the counts."""
    total = summed_class_voxels(files)
    return None if total is None else classes_without_voxels(total, names)


def classes_without_voxels(counts: Sequence[int], names: Sequence[str]) -> list[str]:
    """"name (id)" of each class but background (id 0) that ``counts`` (voxels per class id) gives none."""
    return [f"{name} ({i})" for i, name in enumerate(names) if i and (i >= len(counts) or not counts[i])]


def _cut_body(mask: np.ndarray, body_fraction: np.ndarray, keep: np.ndarray, size: int) -> tuple[int, int]:
    """The kept slices' body voxels outside the crop and in all (a body wider than size x spacing_xy), with
    a warning when any: training sees those slices cut at the crop's edge. Generation covers the whole body
    either way."""
    total = int(mask[:, :, keep].sum(dtype=np.int64))
    lost = total - int(round(float(body_fraction[keep].sum()) * size * size))
    if lost > 0:
        log.warning("%d of the kept slices' %d body voxels (%.1f %%) lie outside the %d x %d crop: training "
                    "sees the body cut there; a larger slice.size or datasets.<name>.preprocess.spacing_xy "
                    "takes it in", lost, total, 100.0 * lost / total, size, size)
    return max(lost, 0), total


def write_pngs(case_id: str, slices: CaseSlices, out_dir: Path, workers: int = 2) -> list[str]:
    """images/<case>_z###.png (8-bit image) and labels/<case>_z###.png (class ids).

    Written from a few threads: PIL's zlib releases the GIL.
    """
    names = [f"{case_id}_z{int(z):03d}.png" for z in slices.z]

    def write(i: int) -> None:
        save_png(out_dir / "images" / names[i], unit_to_uint8(display_view(slices.images[i])))
        save_png(out_dir / "labels" / names[i], display_view(slices.labels[i]))

    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "labels").mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        list(pool.map(write, range(len(names))))
    return names
