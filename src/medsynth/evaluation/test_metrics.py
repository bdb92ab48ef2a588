"""Test-set metrics of generated images.

Paired mode: against the real test image of the same label map (SSIM, PSNR,
RMSE, LPIPS; every sample of a case against that case's real slices). Both
modes: the body the image shows against the label map's body mask (Dice) and
the intensity distribution inside the label map's body against the real
images' (W1) of the image dataset's test split; per class, the intensity of
generated vs real images (HU for CT): ``evaluation/class_intensity.py``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from medsynth.data.slice_batches import Rebatch, case_order, slice_chunks
from medsynth.data.labels import ORGAN_MEAN, class_lookup, organ_ids, organ_note
from medsynth.data.slicing import CaseSlices
from medsynth.inference.resume import require_generated
from medsynth.metrics.image import IntensityHistogram, diversity, paired_metrics, sample_diversity
from medsynth.io.npz import npz_shape
from medsynth.metrics.kid import partners
from medsynth.metrics.fid import fid_note, sample_draws
from medsynth.metrics.perceptual import PerceptualStream
from medsynth.metrics.segmentation import PREDICT_BATCH, confusion, per_class_scores, predict
from medsynth.models.segmenter import UNetSegmenter, load_segmenter

COLUMNS = ["metric", "mean", "std", "n", "note"]
NOT_PAIRED = "not computed: no pixel-aligned reference (unpaired mode)"
NO_WEIGHTS = "not computed: weights unavailable (see metrics.perceptual)"
NO_SLICES = "not computed: no generated test slice (the slicing kept none of the test label maps' slices)"
TOO_FEW = ("not computed: fewer than 2 generated test slices of one sample of the label maps (a distribution "
           "needs two; FID takes one sample of each label map at a time)")
TOO_FEW_REAL = "not computed: {} real test slice(s) of the image dataset (a distribution needs two)"
PAIRED_CASE_METRICS = ["ssim", "psnr", "rmse", "ssim_body", "psnr_body", "rmse_body"]
CASE_COLUMNS = ["case_id", "sample", "slices", *PAIRED_CASE_METRICS, "note"]
# Why a per-case row has no pixel scores: unpaired, a label map has no real image of its own; or nothing was
# generated for the case.
UNPAIRED_CASE = "NA: unpaired, no real image of this label map to compare with pixel by pixel"
EMPTY_CASE = ("NA: no generated slice of this case (its slicing kept none: slice.min_body_fraction and "
              "slice.require_classes decide which slices are kept)")
# Generation sets every pixel outside the label map's body to air: the body a generated test image shows is
# the label map's by construction (1.0 for any generator). Validation scores the generator's own output.
MASKED_BODY = ("not computed on the test set: generation sets everything outside the label map's body to air, "
               "so it would read 1.0 for any generator; validation's body_dice (train/<e>/metrics.tsv) scores the "
               "generator's own output")


def _case_row(case_id: str, sample: int, slices: int, scores: dict[str, torch.Tensor], paired: bool) -> dict:
    """A per_case.tsv row: the sample's mean pixel scores, or (unpaired, or no slice: none) NA and why."""
    if not slices:
        return {"case_id": case_id, "sample": sample, "slices": 0, **dict.fromkeys(PAIRED_CASE_METRICS),
                "note": EMPTY_CASE}
    return {"case_id": case_id, "sample": sample, "slices": slices, **dict.fromkeys(PAIRED_CASE_METRICS),
            **{name: float(v.mean()) for name, v in scores.items()}, "note": "" if paired else UNPAIRED_CASE}


def evaluate_cases(cases: Sequence[tuple[str, Path, Path]], paired: bool, reference_files: Sequence[Path],
                   real_stats: Path | None = None, perceptual: dict | None = None,
                   device: torch.device | None = None,
                   fake_features: np.ndarray | None = None) -> tuple[list[dict], list[dict]]:
    """``cases``: (case id, real slices.npz, generated samples.npz). Returns (summary, per-case rows).

    ``real_stats`` (Inception statistics of the image dataset's test
    split) and ``perceptual`` (the metrics settings) add FID, KID and LPIPS
    when the pretrained weights are there; ``fake_features`` are the generated slices' Inception
    features when the caller has them (``memorisation_features``), so they are not computed twice.
    Cases are read one at a time; what is kept grows by a few numbers per slice (per-image scores,
    Inception features, LPIPS values), not by the slices.
    """
    per_image: dict[str, list[np.ndarray]] = {}
    per_case = []
    slices = 0  # generated test slices (every sample's)
    blocks = []  # (the real slices each sample was generated from, its slices): KID's pairing
    spread = [0.0, 0.0]  # pixel diversity: sum of per-pixel variances across samples, body pixels
    generated = IntensityHistogram()  # intensity W1: every sample inside the body of its label maps
    scores = (PerceptualStream(real_stats, perceptual, device or torch.device("cpu"), fake_features)
              if real_stats is not None and perceptual is not None else None)
    for case_id, real_path, gen_path in sorted(cases):
        real, fakes = load_case(real_path, gen_path)
        real_t = torch.from_numpy(real.images)[:, None]
        body = torch.from_numpy(real.masks)[:, None].float()
        if len(fakes) > 1:
            total, pixels = sample_diversity(torch.from_numpy(fakes)[:, :, None], body)
            spread = [spread[0] + total, spread[1] + pixels]
        for i in range(len(fakes)):  # diversity: every pair of samples of the same label maps
            for j in range(i + 1, len(fakes)):
                if scores is not None:
                    scores.push_pair(torch.from_numpy(fakes[i])[:, None], torch.from_numpy(fakes[j])[:, None])
        for k, fake in enumerate(fakes):
            fake_t = torch.from_numpy(fake)[:, None]
            m = paired_metrics(fake_t, real_t, body=body) if paired else {}
            slices += fake_t.shape[0]
            for name, values in m.items():
                per_image.setdefault(name, []).append(values.numpy())
            per_case.append(_case_row(case_id, k, len(real.z), m, paired))
            blocks.append((source(real_path), fake_t.shape[0]))
            # Every sample of a case is paired with that case's real slices (LPIPS), and
            # scored inside the body of the label maps it was generated from (W1).
            generated.add(fake_t, body)
            if scores is not None:
                scores.push(fake_t, real_t if paired else None)
    if not per_case:
        raise ValueError("no test cases to evaluate: is the test split empty?")
    summary = _pixel_summary(per_image)
    reference = IntensityHistogram()
    for images, masks in slice_chunks(reference_files):
        reference.add(images, masks)
    summary.append({"metric": "body_dice", "mean": math.nan, "std": math.nan, "n": 0, "note": MASKED_BODY})
    summary.append(_w1_row(generated, reference, slices))
    summary.append(_diversity_row(spread, slices))
    if scores is not None:
        partner = kid_partner(blocks, reference_files, scores.real)
        summary += _perceptual_summary(scores.scores(partner, sample_draws(blocks)), scores.counts, paired,
                                       scores.real)
    return summary, per_case


def _diversity_row(spread: Sequence[float], slices: int) -> dict:
    """``pixel_diversity``'s row from ``sample_diversity``'s summed (variances, body pixels) over ``slices``."""
    return {"metric": "pixel_diversity", "mean": diversity(*spread), "std": math.nan, "n": int(spread[1]),
            "note": "pixel std across the samples of one label map (unbiased, pooled), inside the body, "
            "[-1, 1] units" if spread[1] else NO_SLICES if not slices else "not computed: one sample per label map"}


def source(path: str | Path) -> Path:
    """What names a test case's real slices wherever a list holds them (KID's pairing)."""
    return Path(path).resolve()


def kid_partner(blocks: Sequence[tuple[Path, int]], reference_files: Sequence[Path],
                real: int | None) -> np.ndarray | None:
    """KID's pairing (``kid.partners``) of the generated slices, in ``blocks`` (source, slices), with
    the real test statistics' rows, which follow ``reference_files`` in case order (``real`` of them, None:
    not computed). Paired only where each sample was generated from the label map of a reference file and
    the statistics hold those files' slices; otherwise the two sets are independent."""
    files = case_order(reference_files)
    counts = [(source(p), npz_shape(p, "images")[0]) for p in files]
    if real is None or sum(n for _, n in counts) != real:
        return None
    return partners(blocks, counts)


W1_NOTE = ("W1 between the intensities inside the body, every generated test slice against the image dataset's "
           "real test slices, [-1, 1] units; one distance for the whole set, so no std")


def _w1_row(generated: IntensityHistogram, reference: IntensityHistogram, n: int) -> dict:
    """``intensity_w1``'s row over ``n`` generated slices; NA, saying why, without slices on either side."""
    note = NO_SLICES if not n else "not computed: no real test slice of the image dataset" \
        if not reference.counts.sum() else W1_NOTE
    return {"metric": "intensity_w1", "mean": generated.w1(reference) if n else math.nan, "std": math.nan, "n": n,
            "note": note}


def load_case(real_path: Path, gen_path: Path) -> tuple[CaseSlices, np.ndarray]:
    real = CaseSlices.load(Path(real_path))
    require_generated(gen_path)
    with np.load(gen_path) as f:
        fakes, z = f["samples"].astype(np.float32), f["z"]
    if not np.array_equal(z, real.z):
        raise ValueError(f"{gen_path}: slices {z.tolist()} do not match the real slices {real.z.tolist()} "
                         f"of {real_path}; regenerate the test set")
    return real, fakes


def _pixel_summary(per_image: dict[str, list[np.ndarray]]) -> list[dict]:
    summary = []
    for name in ("ssim", "psnr", "rmse", "ssim_body", "psnr_body", "rmse_body"):
        if name not in per_image:
            summary.append({"metric": name, "mean": math.nan, "std": math.nan, "n": 0, "note": NOT_PAIRED})
            continue
        values = np.concatenate(per_image[name])
        if not values.size:
            summary.append({"metric": name, "mean": math.nan, "std": math.nan, "n": 0, "note": NO_SLICES})
            continue
        summary.append({"metric": name, "mean": float(values.mean()), "std": float(values.std()), "n": values.size})
    return summary


def _perceptual_summary(scores: dict[str, float], counts: dict[str, int], paired: bool,
                        real: int | None = None) -> list[dict]:
    """Rows of ``PerceptualStream``'s scores; ``counts``: how many generated images and pairs they are over;
    ``real``: how many real test slices the Inception statistics are of (None: not computed)."""
    rows = []
    for name, std, n in (("fid", scores.get("fid_std", math.nan), counts["fake"]),
                         ("kid", scores["kid_std"], counts["fake"]),
                         ("lpips", math.nan, counts["lpips"]),
                         ("lpips_diversity", math.nan, counts["lpips_diversity"])):
        value = scores[name]
        note = ""
        if math.isnan(value):
            note = NOT_PAIRED if name == "lpips" and not paired else (
                NO_SLICES if not counts["fake"] else
                TOO_FEW if name in ("fid", "kid") and min(counts["fake"], scores.get(f"{name}_rows", 2)) < 2 else
                TOO_FEW_REAL.format(real) if name in ("fid", "kid") and real is not None and real < 2 else
                "not computed: one sample per label map" if name == "lpips_diversity" and not n
                else NO_WEIGHTS)
        if name == "kid" and not note and scores.get("kid_whole_set"):
            note = ("std understates the uncertainty: the test set is no larger than "
                    "metrics.kid_subset_size, so every subset holds all of it")
        if name == "fid" and not note and real is not None:  # as the coronal and sagittal rows
            note = fid_note(scores, real, "slices")
        rows.append({"metric": name, "mean": value, "std": std, "n": 0 if math.isnan(value) else n, "note": note})
    return rows


SEG_COLUMNS = ["class", "dice_generated", "iou_generated", "dice_real", "iou_real", "voxels", "note"]
NO_LABELS = "not computed: the image dataset has no label maps"  # the caller names the dataset
UNKNOWN_CLASS = "not scored: the segmenter (trained on the image dataset's labels) does not know this class"
# A class no real training slice has: the segmenter never learnt it and reads 0 on both sides, which would pull
# both organ means down as if the images lacked it.
UNSEEN_CLASS = "not scored: no real training slice has it, so the segmenter never learnt it (0 on any image)"


def segmentation_consistency(segmenter_path: Path | None, cases: Sequence[tuple[str, Path, Path]],
                             reference_files: Sequence[Path], class_names: Sequence[str],
                             reference_names: Sequence[str] | None, device: torch.device | None = None,
                             not_computed: str = NO_LABELS) -> list[dict]:
    """Per-class Dice/IoU of a segmenter trained on real images, on generated vs real test images:
    rows of ``SEG_COLUMNS``, one per class of ``class_names`` (the experiment's table), then ``ORGAN_MEAN``.

    Generated images are scored against the label maps they were generated from; real test images
    of the image dataset (``reference_files``, labelled by the table ``reference_names``) against
    their own labels (the upper bound). Both in the segmenter's classes (the image dataset's), which
    are matched to the experiment's by name: a class the segmenter does not know is NaN (``note``
    says so) and its pixels are left out of the generated images' confusion, since no prediction
    there is right or wrong. ``segmenter_path`` or ``reference_names`` None (an image-only image
    dataset: no labels to train or score a segmenter on): every row NaN, noted ``not_computed``.
    """
    if segmenter_path is None or reference_names is None:
        return [{"class": c, **dict.fromkeys(SEG_COLUMNS[1:5], math.nan), "voxels": 0, "note": not_computed}
                for c in [*class_names, ORGAN_MEAN]]
    model, seg_names = load_segmenter(Path(segmenter_path), device)
    if tuple(seg_names) != tuple(reference_names):
        raise ValueError(f"{segmenter_path}: the segmenter knows the classes {list(seg_names)}, the image dataset's "
                         f"label table {list(reference_names)}: it is out of date; rerun the segmenter rule")
    lookup = class_lookup(class_names, seg_names)  # experiment class id -> segmenter class id, -1: unknown
    conf_gen, voxels = _generated_confusion(model, cases, lookup, len(class_names), device)
    conf_real = torch.zeros(model.num_classes, model.num_classes, dtype=torch.int64)

    def add(images: torch.Tensor, labels: torch.Tensor) -> None:
        conf_real.add_(confusion(predict(model, images[:, None], batch=len(images), device=device), labels.long(),
                                 model.num_classes))

    run = Rebatch(add, PREDICT_BATCH)  # predict's batches over the whole set: the same predictions
    for images, labels in slice_chunks(reference_files, ("images", "labels")):
        run.push(images, labels)
    run.close()
    real_shown = (conf_real.sum(dim=1) > 0).numpy()  # per segmenter class: a real test slice has it
    return _rows_by_name(per_class_scores(conf_gen), per_class_scores(conf_real), class_names, lookup,
                         voxels, real_shown, model.class_seen)


def _generated_confusion(model: UNetSegmenter, cases: Sequence[tuple[str, Path, Path]], lookup: np.ndarray,
                         num_classes: int, device: torch.device | None) -> tuple[torch.Tensor, np.ndarray]:
    """The segmenter's confusion on every generated sample against its label map mapped into the segmenter's
    classes (``lookup``; -1 leaves a class's pixels out), and the label maps' pixels per class (all samples)."""
    n = model.num_classes
    conf = torch.zeros(n, n, dtype=torch.int64)
    voxels = np.zeros(num_classes, np.int64)
    for _, real_path, gen_path in sorted(cases):
        labels = CaseSlices.load(Path(real_path)).labels.astype(np.int64)
        with np.load(gen_path) as f:
            fakes = torch.from_numpy(f["samples"].astype(np.float32))
        voxels += np.bincount(labels.reshape(-1), minlength=num_classes)[:num_classes] * len(fakes)
        target = torch.from_numpy(lookup[labels])
        known = target >= 0
        for fake in fakes:
            conf += confusion(predict(model, fake[:, None], device=device)[known], target[known], n)
    return conf, voxels


def _rows_by_name(gen: dict[str, list[float]], real: dict[str, list[float]], class_names: Sequence[str],
                  lookup: np.ndarray, voxels: np.ndarray, real_shown: np.ndarray,
                  seen: Sequence[bool] | None = None) -> list[dict]:
    """``SEG_COLUMNS`` rows of the experiment's classes from scores in the segmenter's classes, then the
    organ mean over the organs scored on both sides: one set of classes, so their ratio compares like
    with like (a class absent from one side's test set would otherwise weigh on one mean only). A side
    whose test labels lack a class does not score it (``voxels``: the generated side's label pixels per
    class; ``real_shown``: per segmenter class, whether a real test slice has it): a few stray pixels
    predicted would score 0 there and enter that side's mean only. ``seen``: per segmenter class, whether
    its training slices had it (None: not recorded); one it never saw is not scored on either side."""
    rows = []
    for c, name in enumerate(class_names):
        j = int(lookup[c])
        if j < 0 or (seen is not None and not seen[j]):
            rows.append({"class": name, **dict.fromkeys(SEG_COLUMNS[1:5], math.nan), "voxels": int(voxels[c]),
                         "note": UNKNOWN_CLASS if j < 0 else UNSEEN_CLASS})
            continue
        values = {"dice_generated": gen["dice"][j], "iou_generated": gen["iou"][j], "dice_real": real["dice"][j],
                  "iou_real": real["iou"][j]}
        notes = []
        if not voxels[c]:
            values.update(dice_generated=math.nan, iou_generated=math.nan)
            notes.append("no generated test label map has it")
        if not real_shown[j]:
            values.update(dice_real=math.nan, iou_real=math.nan)
            notes.append("no real test slice has it")
        rows.append({"class": name, **values, "voxels": int(voxels[c]), "note": "; ".join(notes)})
    covered = _scored_organs(rows, class_names)
    mean = {k: float(np.mean([rows[i][k] for i in covered])) if covered else math.nan for k in SEG_COLUMNS[1:5]}
    unknown = [r["class"] for r in rows if r["note"] == UNKNOWN_CLASS]
    # Without a generated slice no class is on both sides: "no organ class to average" would hide why.
    note = organ_note([class_names[i] for i in covered]) if voxels.sum() else NO_SLICES
    note += f"; not scored: {', '.join(unknown)} (unknown to the segmenter)" if unknown else ""
    unseen = [r["class"] for r in rows if r["note"] == UNSEEN_CLASS]
    note += f"; not scored: {', '.join(unseen)} (in no real training slice)" if unseen else ""
    organs = organ_ids(class_names)
    return [*rows, {"class": ORGAN_MEAN, **mean, "voxels": int(voxels[organs].sum()), "note": note}]


def _scored_organs(rows: Sequence[dict], class_names: Sequence[str]) -> list[int]:
    """Ids of the organ classes with a Dice on generated and on real images."""
    return [i for i in organ_ids(class_names)
            if not (math.isnan(rows[i]["dice_generated"]) or math.isnan(rows[i]["dice_real"]))]


def segmentation_summary(rows: list[dict]) -> list[dict]:
    """The organ means of ``segmentation_consistency``'s table as test metrics, and their ratio.

    ``n`` is the number of organ classes the means are over (those scored on both sides); ``note``
    names them, or says why nothing was computed.
    """
    mean = rows[-1]
    n = len(_scored_organs(rows[:-1], [r["class"] for r in rows[:-1]]))
    out = []
    for kind, what in (("generated", "segmenter trained on real images, on generated test images vs their "
                                     "label maps"),
                       ("real", "the same segmenter on real test images (upper bound)")):
        note = mean["note"] if math.isnan(mean[f"dice_{kind}"]) else f"{what}; {mean['note']}"
        out.append({"metric": f"seg_dice_{kind}", "mean": mean[f"dice_{kind}"], "std": math.nan, "n": n,
                    "note": note})
    gen, real = mean["dice_generated"], mean["dice_real"]
    ratio = gen / real if real > 0 else math.nan
    note = "seg_dice_generated / seg_dice_real (1 = as segmentable as real images)"
    if math.isnan(ratio):
        note = "not computed: seg_dice_real is 0" if real == 0 else mean["note"]
    out.append({"metric": "seg_ratio", "mean": ratio, "std": math.nan, "n": n, "note": note})
    return out


def read_metas(files: Sequence[str | Path]) -> dict[str, dict]:
    """Case id (its folder's name) -> ``results/preprocess/<dataset>/<case>/meta.json``."""
    return {Path(f).parent.name: json.loads(Path(f).read_text()) for f in files}


def meta_of(metas: Mapping[str, dict], slices_path: Path) -> dict:
    """The ``meta.json`` (from ``read_metas``) of the case whose ``slices.npz`` is ``slices_path``."""
    case = slices_path.parent.name
    if case not in metas:
        raise KeyError(f"{slices_path}: no meta.json of case {case!r} among the {len(metas)} given; the preprocess "
                       "meta.json of every test case must be an input of evaluate")
    return metas[case]
