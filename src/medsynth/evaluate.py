"""Test-set metrics of generated images.

Paired mode: against the real test image of the same label map (SSIM, PSNR,
RMSE, LPIPS; every sample of a case against that case's real slices). Both
modes: the body the image shows against the label map's body mask (Dice) and
the intensity distribution inside the label map's body against the real
images' (W1) of the image dataset's test split.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from medsynth.data.slicing import CaseSlices
from medsynth.metrics.image import body_dice, intensity_w1, paired_metrics
from medsynth.metrics.perceptual import perceptual_scores
from medsynth.metrics.segmentation import confusion, load_segmenter, predict, summarize
from medsynth.train.run import load_slices

COLUMNS = ["metric", "mean", "std", "n", "note"]
NOT_PAIRED = "not computed: no pixel-aligned reference (unpaired mode)"
NO_WEIGHTS = "not computed: weights unavailable (see metrics.perceptual)"
CASE_COLUMNS = ["case_id", "sample", "slices", "ssim", "psnr", "rmse", "ssim_body", "psnr_body", "rmse_body",
                "body_dice"]


def evaluate_cases(cases: Sequence[tuple[str, Path, Path]], paired: bool, reference_files: Sequence[Path],
                   threshold: float = -0.95, real_stats: Path | None = None, perceptual: dict | None = None,
                   device: torch.device | None = None) -> tuple[list[dict], list[dict]]:
    """``cases``: (case id, real slices.npz, generated samples.npz). Returns (summary, per-case rows).

    ``threshold`` is the experiment's ``train.mask_threshold`` (tissue for body
    Dice). ``real_stats`` (Inception statistics of the image dataset's test
    split) and ``perceptual`` (the metrics settings) add FID, KID and LPIPS
    when the pretrained weights are there.
    """
    per_image: dict[str, list[np.ndarray]] = {}
    per_case, fakes_all, bodies, paired_real, first, second = [], [], [], [], [], []
    for case_id, real_path, gen_path in sorted(cases):
        real, fakes = _load_case(real_path, gen_path)
        real_t = torch.from_numpy(real.images)[:, None]
        body = torch.from_numpy(real.masks)[:, None].float()
        for i in range(len(fakes)):  # diversity: every pair of samples of the same label maps
            for j in range(i + 1, len(fakes)):
                first.append(torch.from_numpy(fakes[i])[:, None])
                second.append(torch.from_numpy(fakes[j])[:, None])
        for k, fake in enumerate(fakes):
            fake_t = torch.from_numpy(fake)[:, None]
            m = paired_metrics(fake_t, real_t, body=body) if paired else {}
            m["body_dice"] = body_dice(fake_t, body, threshold)
            for name, values in m.items():
                per_image.setdefault(name, []).append(values.numpy())
            per_case.append({"case_id": case_id, "sample": k, "slices": len(real.z),
                             **{name: float(v.mean()) for name, v in m.items()}})
            # Every sample of a case is paired with that case's real slices (LPIPS), and
            # scored inside the body of the label maps it was generated from (W1).
            fakes_all.append(fake_t)
            bodies.append(body)
            paired_real.append(real_t)
    if not per_image:
        raise ValueError("no test slices to evaluate: is the test split empty?")
    summary = _pixel_summary(per_image)
    reference = load_slices(reference_files)
    fake = torch.cat(fakes_all)
    w1 = intensity_w1(fake, torch.cat(bodies), reference.images.float(), reference.masks.float())
    summary.append({"metric": "intensity_w1", "mean": w1, "std": math.nan, "n": fake.shape[0]})
    if real_stats is not None and perceptual is not None:
        pairs = (torch.cat(first), torch.cat(second)) if second else None
        summary += _perceptual_summary(fake, real_stats, perceptual, device or torch.device("cpu"),
                                       torch.cat(paired_real) if paired else None, pairs)
    return summary, per_case


def _load_case(real_path: Path, gen_path: Path) -> tuple[CaseSlices, np.ndarray]:
    real = CaseSlices.load(Path(real_path))
    with np.load(gen_path) as f:
        fakes, z = f["samples"].astype(np.float32), f["z"]
    if not np.array_equal(z, real.z):
        raise ValueError(f"{gen_path}: slices {z.tolist()} do not match the real slices {real.z.tolist()} "
                         f"of {real_path}; regenerate the test set")
    return real, fakes


def _pixel_summary(per_image: dict[str, list[np.ndarray]]) -> list[dict]:
    summary = []
    for name in ("ssim", "psnr", "rmse", "ssim_body", "psnr_body", "rmse_body", "body_dice"):
        if name not in per_image:
            summary.append({"metric": name, "mean": math.nan, "std": math.nan, "n": 0, "note": NOT_PAIRED})
            continue
        values = np.concatenate(per_image[name])
        summary.append({"metric": name, "mean": float(values.mean()), "std": float(values.std()), "n": values.size})
    return summary


def _perceptual_summary(fake: torch.Tensor, real_stats: Path, perceptual: dict, device: torch.device,
                        paired_real: torch.Tensor | None,
                        pairs: tuple[torch.Tensor, torch.Tensor] | None) -> list[dict]:
    scores = perceptual_scores(fake, real_stats, perceptual, device, paired_real, pairs)
    rows = []
    for name, std, n in (("fid", math.nan, fake.shape[0]), ("kid", scores["kid_std"], fake.shape[0]),
                         ("lpips", math.nan, 0 if paired_real is None else len(paired_real)),
                         ("lpips_diversity", math.nan, 0 if pairs is None else len(pairs[1]))):
        value = scores[name]
        note = ""
        if math.isnan(value):
            note = NOT_PAIRED if name == "lpips" and paired_real is None else (
                "not computed: one sample per label map" if name == "lpips_diversity" and pairs is None
                else NO_WEIGHTS)
        if name == "kid" and not note and scores.get("kid_whole_set"):
            note = ("std understates the uncertainty: the test set is no larger than "
                    "metrics.kid_subset_size, so every subset holds all of it")
        rows.append({"metric": name, "mean": value, "std": std, "n": 0 if math.isnan(value) else n, "note": note})
    return rows


SEG_COLUMNS = ["class", "dice_generated", "iou_generated", "dice_real", "iou_real", "voxels"]


def segmentation_consistency(segmenter_path: Path, cases: Sequence[tuple[str, Path, Path]],
                             reference_files: Sequence[Path], class_names: Sequence[str],
                             device: torch.device | None = None) -> list[dict]:
    """Per-class Dice/IoU of a segmenter trained on real images, on generated vs real test images.

    Generated images are scored against the label maps they were generated
    from; real test images of the image dataset against their own labels (the
    upper bound: what the segmenter achieves on real data).
    """
    model = load_segmenter(Path(segmenter_path), device)
    n = len(class_names)
    if model.num_classes != n:
        raise ValueError(f"{segmenter_path}: segmenter has {model.num_classes} classes, the label table {n}; "
                         "the image dataset must use the experiment's label table")
    conf_gen = torch.zeros(n, n, dtype=torch.int64)
    for _, real_path, gen_path in sorted(cases):
        labels = torch.from_numpy(CaseSlices.load(Path(real_path)).labels).long()
        with np.load(gen_path) as f:
            fakes = torch.from_numpy(f["samples"].astype(np.float32))
        for fake in fakes:
            conf_gen += confusion(predict(model, fake[:, None], device=device), labels, n)
    reference = load_slices(reference_files)
    conf_real = confusion(predict(model, reference.images.float(), device=device), reference.labels.long(), n)
    gen, real = summarize(conf_gen, class_names), summarize(conf_real, class_names)
    return [{"class": g["class"], "dice_generated": g["dice"], "iou_generated": g["iou"], "dice_real": r["dice"],
             "iou_real": r["iou"], "voxels": g["voxels"]} for g, r in zip(gen, real)]


def segmentation_summary(rows: list[dict]) -> list[dict]:
    """The foreground means of ``segmentation_consistency``'s table as two test metrics.

    ``n`` is the number of foreground classes the mean is over (classes present
    in the test labels or predictions; background and absent classes are left
    out, as in the mean itself).
    """
    mean = rows[-1]
    classes = rows[1:-1]  # background first, the mean row last
    out = []
    for kind, note in (("generated", "segmenter trained on real images, on generated test images vs their "
                                      "label maps"),
                       ("real", "the same segmenter on real test images (upper bound)")):
        n = sum(1 for r in classes if not math.isnan(r[f"dice_{kind}"]))
        out.append({"metric": f"seg_dice_{kind}", "mean": mean[f"dice_{kind}"], "std": math.nan, "n": n,
                    "note": note})
    return out
