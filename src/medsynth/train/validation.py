"""Validation: the metrics of the EMA generator, a run's history of them, its identity, recomputing it.

The history (one row of metrics per validation step) depends on more than the
training: on the real images' Inception statistics (FID, KID), on the
perceptual settings and on the metrics' definitions. Those can change after a
run has finished — the weights placed later, the statistics recomputed — and
Snakemake then reruns training. Restoring the old history would keep FID at NA
(or stale), and selection would silently fall back to another metric. So the
history is stored with a *validation identity*; when the identity differs, every
step is validated again from its EMA snapshot, and the training state is left as
it was.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import torch
from torch import nn

import medsynth
from medsynth.inference.synthesize import synthesize
from medsynth.metrics import DIRECTIONS, METRICS_VERSION, is_better
from medsynth.metrics.image import body_dice, intensity_w1, paired_metrics
from medsynth.metrics.perceptual import INCEPTION_FILE, perceptual_scores, weight_path
from medsynth.models.spectral import refresh_spectral_norm
from medsynth.io.checkpoint import load_checkpoint, save_checkpoint
from medsynth.data.slice_set import SliceSet

log = logging.getLogger(__name__)

# Perceptual settings that change the values (batch size and hash checking only change the speed).
VALUE_SETTINGS = ("perceptual", "kid_subsets", "kid_subset_size")

Validate = Callable[[nn.Module], dict[str, float]]


def evaluate(generator: torch.nn.Module, val: SliceSet, reference: SliceSet, num_classes: int, mode: str,
             seed: int, batch: int, device: torch.device, threshold: float,
             perceptual: dict | None = None, real_stats: Path | None = None,
             val_rows: np.ndarray | None = None) -> dict[str, float]:
    """Validation metrics of the EMA generator on the val label maps.

    SSIM/PSNR/RMSE need a pixel-aligned real image (paired mode); body Dice and
    the intensity W1 distance need none (``reference`` = real images to compare
    intensity distributions with: the same slices in paired mode, dataset B's
    validation slices in unpaired mode). ``val_rows``: the rows of the whole validation set ``val`` holds
    (``evenly_spaced_rows``), the real statistics' rows (of that set, in its order) of its slices.
    """
    fake = synthesize(generator, val.labels.long(), num_classes, seed, batch, device, context=val.context.long())
    out = {k: math.nan for k in DIRECTIONS}
    if mode == "paired":
        out.update({k: float(v.mean()) for k, v in paired_metrics(fake, val.images.float()).items()})
    out["body_dice"] = float(body_dice(fake, val.masks.float(), threshold).mean())
    out["intensity_w1"] = intensity_w1(fake, val.masks.float(), reference.images.float(), reference.masks.float())
    if perceptual is not None and real_stats is not None:
        # Paired, the statistics are of the val slices themselves: KID pairs each fake with its real image.
        partner = val_rows if mode == "paired" else None
        scores = perceptual_scores(fake, real_stats, perceptual, device, partner=partner)
        out["fid"], out["kid"] = scores["fid"], scores["kid"]
    return out


def stats_digest(path: Path) -> str:
    """Digest of an Inception statistics file's arrays (not its bytes: np.savez stamps the time)."""
    h = hashlib.sha256()
    with np.load(path) as f:
        for key in sorted(f.files):
            arr = np.ascontiguousarray(f[key])
            h.update(f"{key}:{arr.dtype.str}:{arr.shape}".encode())
            h.update(arr.tobytes())
    return h.hexdigest()[:16]


def validation_identity(real_stats: Path | None, perceptual: Mapping | None, mask_threshold: float = -0.95,
                        val_slices: str = "") -> dict:
    """What the validation metrics' values depend on besides the generator: ``val_slices`` names the slices
    validated (``SliceSet.fingerprint`` of the label maps, and unpaired of the reference images)."""
    ident: dict = {"metrics_version": METRICS_VERSION, "mask_threshold": mask_threshold, "real_stats": None,
                   "perceptual": None, "inception_weights": None, "val_slices": val_slices}
    if perceptual is not None and real_stats is not None:  # as in evaluate: FID/KID only with both
        ident["real_stats"] = stats_digest(Path(real_stats))
        ident["perceptual"] = {k: perceptual.get(k) for k in VALUE_SETTINGS}
        ident["inception_weights"] = weight_path(Path(perceptual["weights_dir"]), INCEPTION_FILE).is_file()
    return ident


def describe_change(old: Mapping | None, new: Mapping) -> str:
    if not old:
        return "the history was written by a version that did not record what it depends on"
    names = {"metrics_version": "the metrics' version", "mask_threshold": "train.mask_threshold",
             "real_stats": "the real images' Inception statistics",
             "perceptual": "the perceptual settings", "inception_weights": "the presence of the Inception weights",
             "val_slices": "the slices validated (train.val_max_slices, or the val split)"}
    changed = [f"{names.get(k, k)} ({old.get(k)} -> {new.get(k)})" for k in new if old.get(k) != new.get(k)]
    return "changed: " + "; ".join(changed)


def snapshot_path(ckpt_dir: Path, step: int) -> Path:
    return Path(ckpt_dir) / f"ema_step_{step:06d}.pt"


def save_snapshot(ckpt_dir: Path, step: int, ema_state: dict, model: dict, num_classes: int,
                  metrics: dict[str, float], identity: dict, about: dict | None = None) -> Path:
    """The EMA generator as validated at ``step``: what selection chooses from. ``about``: what else
    describes it (class names, slice size), so the snapshot can start a fine-tuning run."""
    return save_checkpoint(snapshot_path(ckpt_dir, step), {
        "step": step, "ema": ema_state, "model": model, "num_classes": num_classes, "metrics": metrics,
        "validation": identity, "version": medsynth.__version__, **(about or {}),
    })


def best_of(history: list[dict]) -> dict:
    """Best value and its step per metric; ties go to the later step, as selection breaks them (more training,
    the same validation score), so ``medsynth info`` names the step selection would pick."""
    best: dict = {}
    for row in history:
        for name in DIRECTIONS:
            value, held = row.get(name, math.nan), best.get(name, {}).get("value")
            if is_better(name, value, held) or value == held:
                best[name] = {"value": value, "step": row["step"]}
    return best


def recompute_history(history: list[dict], ckpt_dir: Path, template: nn.Module, validate: Validate,
                      identity: dict) -> list[dict]:
    """Validate every history step again from its EMA snapshot; the snapshots get the new metrics.

    ``template`` is a generator of the run's architecture (copied, never changed). A step whose
    snapshot cannot be read gets NA metrics: no value is better than a stale one.
    """
    model = copy.deepcopy(template).eval().requires_grad_(False)
    out = []
    for row in history:
        step = int(row["step"])
        path = snapshot_path(ckpt_dir, step)
        try:
            snap = load_checkpoint(path)
        except (FileNotFoundError, ValueError) as exc:
            log.warning("validation of step %d not recomputed, its metrics are now NA: %s", step, exc)
            out.append({"step": step, **{k: math.nan for k in DIRECTIONS}})
            continue
        model.load_state_dict(snap["ema"])
        refresh_spectral_norm(model)  # snapshots of older versions were saved without it
        with torch.no_grad():
            metrics = validate(model)
        out.append({"step": step, **metrics})
        save_checkpoint(path, {**snap, "metrics": metrics, "validation": identity})
        log.info("step %d validation recomputed: %s", step, metrics)
    return out


def revalidate(state: dict, identity: dict, ckpt_dir: Path, template: nn.Module,
               validate: Validate) -> dict | None:
    """``state`` with its history and best recomputed when it was validated under another identity;
    None when nothing needs recomputing. Weights, optimisers and RNG states are passed on untouched."""
    old = state.get("validation")
    if old == identity or not state["history"]:
        return None
    steps = [int(r["step"]) for r in state["history"]]
    log.warning("recomputing the validation metrics of %d step(s) (%s) from their EMA snapshots, without "
                "retraining: %s", len(steps), ", ".join(map(str, steps)), describe_change(old, identity))
    history = recompute_history(state["history"], ckpt_dir, template, validate, identity)
    return {**state, "history": history, "best": best_of(history), "validation": identity}
