"""Per-case preprocessing: canonical orientation, in-plane spacing, body mask, intensity window.

Writes image (float32 in [-1, 1]), label (uint8 class ids) and mask (uint8) NIfTIs on the preprocessed grid,
plus ``meta.json`` holding everything needed to map a generated volume back onto the source grid and scale.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Mapping

import numpy as np

from medsynth.data.body_mask import body_mask, mr_tissue
from medsynth.data.checks import check_ct_has_air, check_has_labels, reorientation_affine
from medsynth.data.intensity import IntensityMap
from medsynth.data.geometry import inplane_grid, resample_to_grid, to_canonical, canonical_grid
from medsynth.data.labels import LabelTable
from medsynth.io.nifti import (
    Volume,
    default_workers,
    load_volume,
    make_dir,
    save_volume,
    voxel_spacing,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreprocessSettings:
    modality: str  # "CT" or "MR"
    spacing_xy: float | None  # target in-plane spacing in mm; None keeps the source spacing
    ct_window: tuple[float, float] = (-1000.0, 1000.0)  # HU mapped to [-1, 1]
    ct_soft_window: tuple[float, float] | None = None  # HU band given ct_soft_share of the range (None: linear)
    ct_soft_share: float = 0.6
    mr_percentiles: tuple[float, float] = (0.5, 99.5)  # of body voxels, mapped to [-1, 1]
    body_threshold_hu: float = -500.0  # CT: tissue is denser than this
    mr_body_fraction: float = 0.1  # MR: tissue is brighter than this fraction of the 99th percentile (and the noise)
    opening_mm: float = 6.0  # radius that detaches the table, pads and cables from the body

    @classmethod
    def from_config(cls, modality: str, p: dict) -> "PreprocessSettings":
        """From a dataset's validated ``preprocess`` section; keys it leaves out (the other modality's,
        which the workflow does not pass) take the defaults."""
        known = {f.name for f in fields(cls)} - {"modality"}
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in p.items() if k in known}
        return cls(modality=modality, **{"spacing_xy": None, **values})

    def __post_init__(self) -> None:
        if self.modality not in ("CT", "MR"):
            raise ValueError(f"modality must be 'CT' or 'MR', got {self.modality!r}")


def find_body(image: np.ndarray, spacing: np.ndarray, settings: PreprocessSettings, workers: int = 1,
              seeds: np.ndarray | None = None) -> np.ndarray:
    """Body mask of a canonical volume: tissue threshold, then ``body_mask`` (``seeds``: labelled voxels)."""
    if settings.modality == "CT":
        tissue = image > settings.body_threshold_hu
    else:
        tissue = mr_tissue(image, settings.mr_body_fraction, workers)
    return body_mask(tissue, (float(spacing[0]), float(spacing[1])), settings.opening_mm, workers, seeds)


def intensity_map(image: np.ndarray, mask: np.ndarray, settings: PreprocessSettings) -> IntensityMap:
    """CT: the configured window (and soft-tissue band); MR: a window between body-voxel percentiles."""
    if settings.modality == "CT":
        return IntensityMap.ct(settings.ct_window, settings.ct_soft_window, settings.ct_soft_share)
    inside = image[mask] if mask.any() else image.ravel()
    lo, hi = np.percentile(inside, settings.mr_percentiles)
    if hi <= lo:
        hi = lo + 1.0
    return IntensityMap.window(float(lo), float(hi))


def preprocess_case(
    case_id: str,
    image_path: Path,
    label_path: Path | None,
    out_dir: Path,
    table: LabelTable,
    settings: PreprocessSettings,
    mask_path: Path | None = None,
    qc_path: Path | None = None,
    workers: int | None = None,
    series: Mapping[str, str] | None = None,
) -> dict:
    """Preprocess one case; ``mask_path`` replaces the computed body mask (e.g. SynthRAD's mask.nii.gz).

    ``label_path`` None: a case of an image-only dataset (``table`` is then background and body), whose
    label map is its body mask.

    Any of the paths may be a DICOM series folder; ``series`` (file role -> SeriesInstanceUID)
    picks the series where a folder holds several. ``workers`` threads share the slice-wise morphology and the (de)compression
    of the NIfTI files, which release the GIL.
    """
    workers = workers or default_workers()
    files = CaseFiles(case_id, Path(image_path), None if label_path is None else Path(label_path), Path(out_dir),
                      None if mask_path is None else Path(mask_path), None if qc_path is None else Path(qc_path),
                      dict(series or {}))
    with ThreadPoolExecutor(max(2, workers)) as pool:
        return _preprocess(files, table, settings, workers, pool)


@dataclass(frozen=True)
class CaseFiles:
    """One case's inputs (any may be a DICOM series folder, ``series`` naming the series by file role)
    and where its outputs go."""
    case_id: str
    image: Path
    label: Path | None  # None: a case of an image-only dataset
    out_dir: Path
    mask: Path | None = None  # replaces the computed body mask
    qc: Path | None = None
    series: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Grids:
    """The source grid made canonical (RAS, no interpolation) and the training grid in-plane resampled from it."""
    canonical: np.ndarray
    affine: np.ndarray
    shape: tuple[int, int, int]


def _preprocess(files: CaseFiles, table: LabelTable, settings: PreprocessSettings, workers: int,
                pool: ThreadPoolExecutor) -> dict:
    image, label_vol, label_affine, given_mask = _read_case(files, pool)
    source = image.array
    if np.issubdtype(source.dtype, np.floating) and source.dtype != np.float32:
        source = source.astype(np.float32)  # float64 (scaled integers) holds no precision a scanner has
    shape_c, aff_c = canonical_grid(source.shape, image.affine)
    shape, affine = inplane_grid(shape_c, aff_c, settings.spacing_xy)
    grids = _Grids(aff_c, affine, shape)
    # The label map goes its own way (table, grid) while this thread resamples the image; its file
    # is written while the intensity curve is found. An image-only case has an empty map, which
    # the body class fills below.
    label_job = (pool.submit(labels_on_grid, label_vol, label_affine, table, aff_c, affine, shape)
                 if label_vol is not None else pool.submit(np.zeros, shape, np.uint8))
    img_c, _ = to_canonical(source, image.affine)
    background = float(img_c.min())
    img_r = resample_to_grid(img_c, aff_c, affine, shape, order=1, cval=background, workers=workers)
    lab_r = label_job.result()
    if files.label is not None:
        check_has_labels(lab_r, files.label, table)
    if settings.modality == "CT" and given_mask is None:
        check_ct_has_air(files.image, background, settings.body_threshold_hu, lab_r)
    make_dir(files.out_dir)
    mask = _body_mask(img_c, img_r, grids, given_mask, settings, workers, lab_r > 0)
    outside = _widen_to_labels(mask, lab_r, files.case_id)
    body_voxels = add_body_class(lab_r, mask, table)
    writes = [pool.submit(save_volume, files.out_dir / "label.nii.gz", lab_r, affine)]
    class_voxels = pool.submit(lambda: np.bincount(lab_r.ravel(), minlength=table.num_classes).tolist())
    curve = intensity_map(img_r, mask, settings)
    unit = curve.to_unit(img_r)
    unit[~mask] = -1.0
    writes += [pool.submit(save_volume, files.out_dir / "image.nii.gz", unit, affine),
               pool.submit(save_volume, files.out_dir / "mask.nii.gz", mask.astype(np.uint8), affine)]
    for job in writes:
        job.result()
    meta = {**_source_meta(files, image), "shape": list(shape), "affine": affine.tolist(),
            "spacing": voxel_spacing(affine).tolist(), "modality": settings.modality,
            "intensity": {**curve.to_meta(), "background": background}, "labelled_voxels_outside_mask": outside,
            "body_class": table.body_class, "body_derived": table.body_derived,
            "body_class_voxels_from_mask": body_voxels, "class_voxels": class_voxels.result(),
            "settings": asdict(settings)}
    (files.out_dir / "meta.json").write_text(json.dumps(meta, indent=1))
    if files.qc is not None:
        _write_qc(files, img_c, (curve.lo, curve.hi), unit, mask, lab_r, table)
    return meta


def _read_case(files: CaseFiles, pool: ThreadPoolExecutor
               ) -> tuple[Volume, Volume | None, np.ndarray | None, tuple[Volume, np.ndarray] | None]:
    """The image, the label map with the affine to reorient it by, and a given mask with its affine."""
    # The file's own type: an int16 CT stays int16 (half the memory traffic) until interpolation makes it float32.
    image_job = pool.submit(load_volume, files.image, None, files.series.get("image"))
    mask_job = (pool.submit(load_volume, files.mask, np.int32, files.series.get("mask"))
                if files.mask is not None else None)
    label = load_volume(files.label, np.integer, files.series.get("label")) if files.label is not None else None
    image = image_job.result()
    label_affine = reorientation_affine(image, label) if label is not None else None
    given_mask = None
    if mask_job is not None:
        mask = mask_job.result()
        given_mask = (mask, reorientation_affine(image, mask))
    if float(image.array.max()) == float(image.array.min()):
        raise ValueError(f"{files.image}: image is constant ({image.array.min()}); nothing to learn from")
    return image, label, label_affine, given_mask


def _body_mask(img_c: np.ndarray, img_r: np.ndarray, grids: _Grids, given: tuple[Volume, np.ndarray] | None,
               settings: PreprocessSettings, workers: int, labelled: np.ndarray) -> np.ndarray:
    """The body on the training grid: the given mask resampled, or found on the coarser of the two grids
    (keeping every tissue component that holds a ``labelled`` voxel, training grid)."""
    if given is not None:
        mask_c, _ = to_canonical(given[0].array > 0, given[1])
        return resample_to_grid(mask_c.astype(np.uint8), grids.canonical, grids.affine, grids.shape,
                                order=0).astype(bool)
    if grids.shape[0] * grids.shape[1] < img_c.shape[0] * img_c.shape[1]:
        # Downsampling: find the body on the smaller training grid (the opening radius is in mm
        # on either grid); a fine source grid would cost several times as much for the same outline.
        return find_body(img_r, voxel_spacing(grids.affine), settings, workers, labelled)
    # Same or finer grid: find the body before interpolation blurs the skin, carry it over
    # with nearest neighbour like the labels.
    seeds = resample_to_grid(labelled.view(np.uint8), grids.affine, grids.canonical, img_c.shape, order=0)
    mask_c = find_body(img_c, voxel_spacing(grids.canonical), settings, workers, seeds.astype(bool))
    return resample_to_grid(mask_c.astype(np.uint8), grids.canonical, grids.affine, grids.shape, order=0).astype(bool)


def _widen_to_labels(mask: np.ndarray, label: np.ndarray, case_id: str) -> int:
    """Every labelled voxel must be inside the mask: widen it by the labels (in place) rather than drop
    anatomy; returns how many were outside."""
    outside = int(np.count_nonzero((label > 0) & ~mask))
    if outside:
        log.warning("%s: %d labelled voxels were outside the body mask; mask widened to include them", case_id, outside)
        mask |= label > 0
    return outside


def _source_meta(files: CaseFiles, image: Volume) -> dict:
    return {
        "case_id": files.case_id,
        "source_image": str(files.image),
        "source_label": "" if files.label is None else str(files.label),
        "image_only": files.label is None,
        "source_series": dict(files.series),  # DICOM folders: the series read (by file role)
        "source_shape": list(image.array.shape),
        "source_affine": image.affine.tolist(),
        "mask_source": str(files.mask) if files.mask is not None else "computed",
    }


def _write_qc(files: CaseFiles, source: np.ndarray, window: tuple[float, float], unit: np.ndarray,
              mask: np.ndarray, label: np.ndarray, table: LabelTable) -> None:
    from medsynth.io.figures import preprocess_qc  # matplotlib only when a QC picture is asked for

    # The slice with the most labelled anatomy (every body slice carries the body class); the most
    # body where nothing else is labelled (an image-only case).
    organs = (label > 0) & (label != table.body_class)
    z = int(np.argmax((organs if organs.any() else label > 0).sum(axis=(0, 1))))
    preprocess_qc(files.qc, source[:, :, z], window, unit[:, :, z], mask[:, :, z], label[:, :, z],
                  table.num_classes, title=f"{files.case_id}, axial slice {z}")


def add_body_class(label: np.ndarray, mask: np.ndarray, table: LabelTable) -> int:
    """Give the body class to the unlabelled voxels inside the body mask (in place); returns their count.

    So the generator sees the body outline (the shape it must draw) and
    unlabelled tissue apart from the air around the patient.
    """
    unlabelled = mask & (label == 0)
    label[unlabelled] = table.body_class
    return int(np.count_nonzero(unlabelled))


def labels_on_grid(label: Volume, source_affine: np.ndarray, table: LabelTable, aff_c: np.ndarray,
                    affine: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Class ids (uint8) on the training grid: table lookup and nearest-neighbour resampling.

    ``source_affine`` is the one to reorient with (``checks.reorientation_affine``): the image's
    when the label map shares its grid as stored, the label's own when only its orientation differs.
    """
    raw = label.array
    if raw.dtype.itemsize == 1 and table.lists_every_value_of(raw):
        # Nearest neighbour commutes with the lookup, and every value is known: look up the
        # resampled map, which has fewer voxels than the source when the grid gets coarser.
        lab_c, _ = to_canonical(raw, source_affine)
        return table.apply(resample_to_grid(lab_c, aff_c, affine, shape, order=0), str(label.path))
    lab_c, _ = to_canonical(table.apply(raw, str(label.path)), source_affine)
    return resample_to_grid(lab_c, aff_c, affine, shape, order=0)


# A labelled source voxel holds generated tissue when the body's share among its grid neighbours (the body
# resampled linearly onto the source grid) exceeds this; at none, it keeps the background value.
TISSUE_SHARE = 1e-3


def back_to_source(volume: np.ndarray, meta: dict, *, order: int, cval: float) -> np.ndarray:
    """Map a volume on the preprocessed grid back onto the source grid (shape and affine).

    The grid covers the source's field of view up to the rounding of its voxel count (``inplane_grid``):
    it can stop up to half a grid voxel short of the source's edge, so the edge value reaches a whole grid
    voxel beyond its outer centres. With half a voxel, as resampling elsewhere, the source's last row and
    column (0.7 mm voxels on a 1.5 mm grid) came back as background under their labels.
    """
    return resample_to_grid(
        volume,
        np.asarray(meta["affine"]),
        np.asarray(meta["source_affine"]),
        tuple(meta["source_shape"]),
        order=order,
        cval=cval,
        edge=1.0,
    )


def load_preprocessed(case_dir: Path) -> tuple[Volume, Volume, Volume, dict]:
    meta = json.loads((case_dir / "meta.json").read_text())
    return (
        load_volume(case_dir / "image.nii.gz", np.float32),
        load_volume(case_dir / "label.nii.gz", np.uint8),
        load_volume(case_dir / "mask.nii.gz", np.uint8),
        meta,
    )
