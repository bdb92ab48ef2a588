"""The memorisation audits. Of the generated test set (evaluate): each generated slice's nearest
training slice in pixels and (with the FID weights) Inception features, against real test slices
(``metrics.memorisation``); its rows for ``memorisation.tsv`` and ``test_metrics.tsv``, and the
closest pairs for the figure. Of what is shared (``audit_shared``): every exported synthetic
volume against the real image of its own label map and the training set, in pixels."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Iterator, Mapping, NamedTuple, Sequence

import numpy as np
import torch
from tqdm import tqdm

from medsynth.data.slice_batches import Rebatch, slice_chunks
from medsynth.io.nifti import load_volume
from medsynth.io.npz import npz_shape
from medsynth.io.tables import parse_float
from medsynth.evaluation.test_metrics import NO_WEIGHTS, load_case
from medsynth.inference.resume import require_generated
from medsynth.metrics.memorisation import (Nearest, audit_features, compare, held_out_scale, nearest_training,
                                          search_chunks)
from medsynth.metrics.perceptual import generated_features

FEATURE_COLUMNS = ["feature_distance", "feature_ratio", "feature_nearest_case", "feature_nearest_z"]
MEMORISATION_COLUMNS = ["case_id", "sample", "z", "distance", "ratio", "flagged", "nearest_case", "nearest_z",
                        *FEATURE_COLUMNS]


class GeneratedSlices(NamedTuple):
    """Every generated test slice, in the order evaluate scores them (cases sorted, then samples, then
    slices): which they are (``keys``), read a case at a time (``chunks``), never all at once."""
    cases: list[tuple[str, Path, Path]]  # (case id, real slices.npz, samples.npz), sorted
    keys: list[tuple[str, int, int]]  # (case, sample, z) per slice

    def chunks(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Per (case, sample): its slices (n, H, W) as stored (float16) and the body masks (n, H, W) of
        the label maps they were generated from."""
        for _, real_path, gen_path in self.cases:
            with np.load(real_path) as f:
                masks = torch.from_numpy(f["masks"])
            with np.load(gen_path) as f:
                fakes = torch.from_numpy(f["samples"])
            for fake in fakes:
                yield fake, masks


def generated_images(cases: Sequence[tuple[str, Path, Path]]) -> GeneratedSlices:
    """The generated test slices of ``cases`` (case id, real slices.npz, samples.npz) for both audits: their
    keys from the files' z and headers (the slices stay on disk)."""
    keys = []
    for case_id, real_path, gen_path in sorted(cases):
        require_generated(gen_path)
        with np.load(real_path) as real, np.load(gen_path) as gen:
            z, gen_z = real["z"], gen["z"]
        if not np.array_equal(z, gen_z):
            raise ValueError(f"{gen_path}: slices {gen_z.tolist()} do not match the real slices {z.tolist()} "
                             f"of {real_path}; regenerate the test set")
        keys += [(case_id, k, int(v)) for k in range(npz_shape(Path(gen_path), "samples")[0]) for v in z]
    return GeneratedSlices(sorted(cases), keys)


class TrainingImages(NamedTuple):
    """The image dataset's training slices as the nearest-slice search reads them: images only, float16
    as stored (half the memory of float32; ``nearest_training`` converts a chunk at a time)."""
    images: torch.Tensor  # (M, H, W) float16
    case_ids: list[str]
    z: list[int]


def training_images(files: Sequence[str | Path]) -> TrainingImages:
    """The slices of ``slices.npz`` files (case id = folder name, in sorted order as ``load_slices``), filled
    into one preallocated array: no copy of the whole set is ever made."""
    files = sorted((Path(f).parent.name, Path(f)) for f in files)
    shapes = [npz_shape(path, "images") for _, path in files]
    images = np.empty((sum(sh[0] for sh in shapes), *(shapes[0][1:] if shapes else (0, 0))), np.float16)
    case_ids, zs, at = [], [], 0
    for (case_id, path), shape in zip(files, shapes):
        with np.load(path) as f:
            images[at:at + shape[0]] = f["images"]
            zs += [int(v) for v in f["z"]]
        case_ids += [case_id] * shape[0]
        at += shape[0]
    return TrainingImages(torch.from_numpy(images), case_ids, zs)


def on_search_device(train: TrainingImages, device: torch.device | None) -> TrainingImages:
    """The training slices where the search runs: on a GPU when they fit in half its free memory (float16,
    26 GB for AutoPET's 200 k slices at 256 px), so each query chunk does not copy the whole set to it."""
    if device is None or device.type != "cuda":
        return train
    free, _ = torch.cuda.mem_get_info(device)
    if train.images.numel() * train.images.element_size() > free / 2:
        return train
    return train._replace(images=train.images.to(device))


def nearest_of(chunks: Iterable[tuple[torch.Tensor, torch.Tensor]], train: torch.Tensor,
               allowed: np.ndarray | None = None, device: torch.device | None = None) -> Nearest:
    """``nearest_training`` of slices read in chunks (images, masks), in the query chunks one search over
    all of them makes: the same numbers, without holding them."""
    queries, _ = search_chunks(device)  # a batch of queries: one chunk of nearest_training's
    run = Rebatch(lambda q, m: nearest_training(q, m, train, allowed=allowed, device=device), queries)
    for images, masks in chunks:
        run.push(images, masks)
    found = run.close()
    if not found:  # no slice at all: every case's slicing kept none
        return Nearest(np.zeros(0), np.zeros(0, np.int64))
    return Nearest(np.concatenate([f.distance for f in found]), np.concatenate([f.index for f in found]))


def memorisation_cases(generated: GeneratedSlices, train_files: Sequence[Path], reference_files: Sequence[Path],
                       threshold: float, features: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
                       device: torch.device | None = None) -> tuple[list[dict], dict, dict | None]:
    """Per generated test slice its nearest training slice of the image dataset (rows of
    ``MEMORISATION_COLUMNS``, closest first) and the summaries in pixel and (given ``features``:
    Inception features of the generated, real test and training slices, in ``generated``'s and the
    slice files' order) feature space, each against the real test slices' own distances to the
    training set (``metrics.memorisation``). ``flagged``: a possible copy in either space.

    The training set is held once, float16 (on ``device``, the search's, when it fits); generated and real
    test slices are read a case at a time."""
    train = on_search_device(training_images(train_files), device)
    reference = nearest_of(slice_chunks(reference_files), train.images, device=device)
    pixel = compare(nearest_of(generated.chunks(), train.images, device=device), reference, threshold)
    feat = None
    if features is not None:
        if tuple(map(len, features)) != (len(generated.keys), len(reference.distance), len(train.z)):
            raise ValueError("memorisation audit: Inception features do not match the slices; rerun real_stats")
        feat = audit_features(*features, threshold=threshold)
    rows = []
    for i, (c, k, z) in enumerate(generated.keys):
        j = int(pixel.nearest.index[i])
        row = {"case_id": c, "sample": k, "z": z, "distance": float(pixel.nearest.distance[i]),
               "ratio": float(pixel.ratio[i]), "flagged": bool(pixel.flagged[i]),
               "nearest_case": train.case_ids[j], "nearest_z": train.z[j],
               **dict.fromkeys(FEATURE_COLUMNS)}  # NA: no Inception weights
        if feat is not None:
            j = int(feat.nearest.index[i])
            row.update(feature_distance=float(feat.nearest.distance[i]), feature_ratio=float(feat.ratio[i]),
                       flagged=row["flagged"] or bool(feat.flagged[i]),
                       feature_nearest_case=train.case_ids[j], feature_nearest_z=train.z[j])
        rows.append(row)
    return sorted(rows, key=_closest_ratio), pixel.summary, None if feat is None else feat.summary


def _closest_ratio(row: Mapping) -> float:
    """A memorisation row's smaller ratio: pixel, or Inception where computed (a written row reads back as text);
    inf where neither was (no real test slice to scale the distances: NA)."""
    ratios = [parse_float(row.get(k)) for k in ("ratio", "feature_ratio")]
    return min((r for r in ratios if math.isfinite(r)), default=math.inf)


def memorisation_features(generated: GeneratedSlices, real_stats: Path, train_stats: Path, settings: dict,
                          device: torch.device) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Inception features of the generated test slices (in their order), the real test slices and the
    training slices (``real_stats``' files), or None without the weights."""
    with np.load(train_stats) as f:
        if not bool(f["available"]):
            return None
        train = f["features"]
    gen = generated_features((fake[:, None] for fake, _ in generated.chunks()), real_stats, settings, device)
    if gen is None:
        return None
    with np.load(real_stats) as f:
        return gen, f["features"], train


def memorisation_summary(pixel: dict, feature: dict | None) -> list[dict]:
    """The audit's rows for test_metrics.tsv: pixel space always, Inception space when computed."""
    rows = []
    for suffix, summary, space in (("", pixel, "RMS pixel distance inside the body"),
                                   ("_inception", feature, "Inception pool3 feature distance")):
        if summary is None:
            rows += [{"metric": f"memorisation_{name}{suffix}", "mean": math.nan, "std": math.nan, "n": 0,
                      "note": NO_WEIGHTS} for name in ("ratio", "flagged")]
            continue
        if "note" in summary:  # nothing to compare: no generated or no real test slice
            rows += [{"metric": f"memorisation_{name}{suffix}", "mean": math.nan, "std": math.nan, "n": 0,
                      "note": summary["note"]} for name in ("ratio", "flagged")]
            continue
        note = (f"{space} to the nearest training slice / the real test slices' median "
                f"({summary['real_median_distance']:.3g}); flagged below {summary['threshold']:g}")
        rows += [{"metric": f"memorisation_ratio{suffix}", "mean": summary["ratio_median"], "std": math.nan,
                  "n": summary["slices"], "note": f"median; 5th percentile {summary['ratio_p05']:.3g}; {note}"},
                 {"metric": f"memorisation_flagged{suffix}", "mean": summary["flagged"], "std": math.nan,
                  "n": summary["slices"], "note": f"generated test slices flagged as possible copies ({space})"}]
    return rows


def memorisation_pairs_panels(table: Path, cases_dir: Path, real_files: Sequence[Path], train_files: Sequence[Path],
                              count: int = 8) -> list[tuple[np.ndarray, np.ndarray, str, bool]]:
    """(generated slice, nearest training slice, title, flagged) of the ``count`` closest rows of
    ``memorisation.tsv`` (it is sorted closest first)."""
    from medsynth.inference.generate_cases import generated_cases
    from medsynth.io.tables import read_tsv

    rows = [r for r in read_tsv(table)[:count] if math.isfinite(_closest_ratio(r))]  # NA: nothing to show
    named = {r[f"{space}nearest_case"] for r in rows for space in ("", "feature_")}
    train = training_images([f for f in train_files if Path(f).parent.name in named])  # only the cases shown
    where = {(c, z): i for i, (c, z) in enumerate(zip(train.case_ids, train.z))}
    shown = {}  # (case, sample, z) -> the generated slice: copies, a case read at a time (not its whole samples)
    for case_id, real_path, gen_path in generated_cases(real_files, cases_dir):
        if any(r["case_id"] == case_id for r in rows):
            real, fakes = load_case(real_path, gen_path)
            index = {int(z): i for i, z in enumerate(real.z)}
            shown.update({(case_id, r["sample"], r["z"]): fakes[int(r["sample"])][index[int(r["z"])]].copy()
                          for r in rows if r["case_id"] == case_id})
            del real, fakes
    panels = []
    for r in rows:
        generated = shown[(r["case_id"], r["sample"], r["z"])]
        # The nearest slice of the space that puts it closest: pixels, or Inception features.
        space = "" if _closest_ratio(r) == parse_float(r["ratio"]) else "feature_"
        nearest = train.images[where[(r[f"{space}nearest_case"], int(r[f"{space}nearest_z"]))]].float().numpy()
        title = (f"{r['case_id']} z{int(r['z'])} s{r['sample']}\n"
                 f"{'Inception ' if space else ''}ratio {_closest_ratio(r):.2f}")
        panels.append((generated, nearest, title, r["flagged"] == "True"))
    return panels


# The audit of what is shared: every exported synthetic volume (the training label maps' and generate_from's).
EXPORT_AUDIT_COLUMNS = ["case_id", "sample", "patient_id", "slices", "audited_share", "own_ratio_median",
                        "own_ratio_min",
                        "nearest_ratio_median", "nearest_ratio_min", "nearest_case", "nearest_z", "flagged_slices",
                        "flagged", "note"]


class SharedCase(NamedTuple):
    """An exported synthetic case: its generated samples and the slices it was generated from."""
    case_id: str  # generate's case id (its folder under cases/)
    patient: str
    slices: Path  # its slices.npz: body masks and z (and, with ``own``, the real image of its label map)
    samples: Path  # generate's samples.npz of the case
    own: bool  # a paired generator trained on the real image of this label map: compare with it
    grid_label: Path | None = None  # its label map on the training grid (preprocess): the body the volume covers


def rms_inside(a: torch.Tensor, b: torch.Tensor, masks: torch.Tensor) -> np.ndarray:
    """RMS difference of (..., n, H, W) images inside the (n, H, W) body masks, per slice."""
    m = masks.double()
    sq = ((a.double() - b.double()) ** 2 * m).sum(dim=(-2, -1)) / m.sum(dim=(-2, -1)).clamp(min=1)
    return sq.sqrt().numpy()


def own_scale(test_cases: Sequence[tuple[Path, Path]]) -> float:
    """The median distance of generated TEST slices to the real image of their own label map: what a
    generator that has not seen a patient reaches on the same anatomy (the own-image audit's unit)."""
    dists = []
    for real_path, gen_path in test_cases:
        real, fakes = load_case(real_path, gen_path)
        dists.append(rms_inside(torch.from_numpy(fakes), torch.from_numpy(real.images), torch.from_numpy(real.masks))
                     .ravel())
    return float(np.median(np.concatenate(dists))) if dists else math.nan


def audit_shared(cases: Sequence[SharedCase], train_files: Sequence[Path], reference_files: Sequence[Path],
                 test_cases: Sequence[tuple[Path, Path]], paired: bool, threshold: float,
                 device: torch.device | None = None) -> tuple[list[dict], dict]:
    """Rows of ``EXPORT_AUDIT_COLUMNS`` per exported volume (case, sample) and the summary.

    Each generated slice against (a) the real image of its own label map (paired: the generator was trained
    on it), in units of ``own_scale`` over the test cases, and (b) its nearest training slice of the image
    dataset, in units of the real test slices' median nearest-training distance (``metrics.memorisation``):
    every training slice but those (a) covers, so another study of the same patient is searched (a
    generate_from case of a training patient, or a patient with several training studies). A volume is
    flagged when any of its slices is below ``threshold`` in either. A check that has nothing to compare
    with (no generated test slice for (a)'s unit: then (b) searches the own slices too; no training slice
    but the case's own; a volume without generated slices) is NA and its ``note`` says why; a volume
    neither check could compare is not audited (``flagged`` NA), never "not flagged".
    The audit sees the crops of the slices training kept; a volume covers its whole body (every labelled
    slice, the whole labelled extent): ``audited_share`` says how much of it was audited."""
    train = on_search_device(training_images(train_files), device)
    reference = nearest_of(slice_chunks(reference_files), train.images, device=device).distance
    scale = held_out_scale(reference)  # refused as evaluate's audit is when the test slices are training slices
    own = own_scale(test_cases) if paired else math.nan
    train_cases = np.array(train.case_ids)
    rows, audited, body = [], 0, 0
    for case in tqdm(sorted(cases), desc="audit", unit="case"):
        real, fakes = load_case(case.slices, case.samples)
        own_check = paired and case.own and own > 0  # the generator trained on this label map's real image
        own_na = [_own_na(paired, case.own, own)] if len(real.z) and not own_check else []
        others = train_cases != Path(case.slices).parent.name if own_check else None
        seen, whole = audited_voxels(real.labels, case.grid_label)
        if whole:
            audited, body = audited + seen * len(fakes), body + whole * len(fakes)
        for k, fake in enumerate(torch.from_numpy(fakes)):
            rows.append({"case_id": case.case_id, "sample": k, "patient_id": case.patient, "slices": len(real.z),
                         "audited_share": seen / whole if whole else None,
                         **_audit_volume(fake, real, own_check, train, others, (scale, own), threshold, own_na,
                                         device)})
    summary = {"volumes": len(rows), "flagged": sum(r["flagged"] is True for r in rows),
               "not_audited": sum(r["flagged"] is None for r in rows), "threshold": threshold,
               "nearest_scale": scale, "own_scale": own, "paired": paired,
               "audited_share": audited / body if body else math.nan}
    return rows, summary


OWN_NA = ("own image: NA, no generated test slice to scale the distance (its own training slices are "
          "searched as nearest training slices instead)")
OWN_EXACT = ("own image: NA, the generated test slices equal the real images of their own label maps (median "
             "distance 0), so the distance has no unit (its own training slices are searched as nearest training "
             "slices instead); a generator that reproduces unseen patients' scans exactly suggests the test images "
             "reached its training: check the split")
OWN_UNPAIRED = "own image: NA, unpaired (the generator was never shown an image of this label map)"
OWN_NOT_TRAINED = ("own image: NA, a generate_from label map: no image of it is known (a copy of a training map "
                   "meets its image in the nearest-slice search)")


def _own_na(paired: bool, own_image: bool, scale: float) -> str:
    """Why a volume with slices has no own-image check (paired, with its own image: ``scale``, the unit,
    is NaN or 0)."""
    return OWN_UNPAIRED if not paired else OWN_NOT_TRAINED if not own_image else OWN_EXACT if scale == 0 else OWN_NA


def audited_voxels(crop_labels: np.ndarray, grid_label: Path | None) -> tuple[int, int]:
    """(labelled voxels in the audited crops, labelled voxels of the whole label map on the training grid);
    one crop per kept slice, so the crops do not overlap. Without the grid label map: (crops', 0)."""
    seen = int(np.count_nonzero(crop_labels))
    if grid_label is None:
        return seen, 0
    return seen, int(np.count_nonzero(load_volume(Path(grid_label), np.uint8).array))


def _audit_volume(fake: torch.Tensor, real, own_check: bool, train, others: np.ndarray | None,
                  scales: tuple[float, float], threshold: float, notes: Sequence[str] = (),
                  device: torch.device | None = None) -> dict:
    """One exported volume's columns: its slices against their own real images and the nearest training
    slice (``others``: the candidates), flagged where either ratio is below ``threshold``; ``notes``: why a
    check the caller decided on is NA, put before this volume's own."""
    scale, own = scales
    masks, n = torch.from_numpy(real.masks).float(), len(real.z)
    notes, nearest_ratio, j = list(notes), np.full(n, np.nan), None
    if n == 0:
        notes.append("no generated slice (the label map has no slice the slicing kept)")
    elif others is not None and not others.any():
        notes.append("nearest training slice: NA, the training set holds only this case's own slices (the "
                     "own-image check covers them)")
    elif not scale > 0:
        notes.append("nearest training slice: NA, no real test slice to scale the distance")
    else:
        near = nearest_training(fake, masks, train.images, allowed=others, device=device)
        nearest_ratio = near.distance / scale
        j = int(np.argmin(nearest_ratio))
    own_ratio = rms_inside(fake, torch.from_numpy(real.images), masks) / own if own_check and n else np.full(n, np.nan)
    flagged = (nearest_ratio < threshold) | (own_ratio < threshold)
    if np.isnan(nearest_ratio).all() and np.isnan(own_ratio).all():  # nothing compared: not "not flagged"
        notes.append("not audited: neither check could run")
        return {**_NOT_AUDITED, "note": "; ".join(notes)}
    return {"own_ratio_median": _nan_stat(np.median, own_ratio), "own_ratio_min": _nan_stat(np.min, own_ratio),
            "nearest_ratio_median": _nan_stat(np.median, nearest_ratio),
            "nearest_ratio_min": _nan_stat(np.min, nearest_ratio),
            "nearest_case": None if j is None else train.case_ids[int(near.index[j])],
            "nearest_z": None if j is None else train.z[int(near.index[j])],
            "flagged_slices": int(flagged.sum()), "flagged": bool(flagged.any()), "note": "; ".join(notes)}


_NOT_AUDITED = {"own_ratio_median": None, "own_ratio_min": None, "nearest_ratio_median": None,
                "nearest_ratio_min": None, "nearest_case": None, "nearest_z": None, "flagged_slices": None,
                "flagged": None}


def _nan_stat(stat, values: np.ndarray) -> float | None:
    """A statistic of a ratio column; None (NA) where there is nothing to compare with."""
    return None if np.isnan(values).all() else float(stat(values))
