"""How the utility benchmark scores a segmenter on the real test split: confusions per test patient, Dice
per class and the organ mean, and bootstrap intervals that resample test patients.

Every model of the benchmark is scored on the same test units with the same
resamples (they depend only on the seed and the number of units), so draw i of
any two models resamples the same patients: their difference is a paired
bootstrap (``utility_curve``).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from medsynth.data.slice_batches import Rebatch
from medsynth.io.tables import read_tsv
from medsynth.metrics.segmentation import PREDICT_BATCH, per_class_scores, predict
from medsynth.data.slice_set import SliceSet
from medsynth.evaluation.utility_data import TestCases

MIN_PATIENTS = 5  # fewer test patients: resample slices instead (and say so)


def patients_of(split_tsv: Path) -> dict[str, str]:
    """Case id -> patient id, from a dataset's ``results/split/<dataset>/split.tsv``."""
    return {row["case_id"]: row["patient_id"] for row in read_tsv(split_tsv)}


def bootstrap_units(case_ids: Sequence[str], patients: Mapping[str, str]) -> tuple[np.ndarray, int, str]:
    """The bootstrap's resampling unit of each test slice (its index among the units), how many units, and
    the note saying which: a test patient (all its cases: studies of one patient are alike, so resampling
    them apart would make the interval too narrow), or a slice when there are few patients."""
    missing = sorted(set(case_ids) - set(patients))
    if missing:
        raise ValueError(f"utility: test case(s) {missing[:5]} are not in the image dataset's split.tsv; rerun its "
                         "split (snakemake --forcerun split)")
    order = {p: i for i, p in enumerate(sorted({patients[c] for c in case_ids}))}
    cases = len(set(case_ids))
    if len(order) >= MIN_PATIENTS:
        note = f"95 % bootstrap interval over {len(order)} test patients ({cases} cases)"
        return np.array([order[patients[c]] for c in case_ids], np.int64), len(order), note
    note = (f"95 % bootstrap interval over {len(case_ids)} test slices: only {len(order)} test patient(s), and "
            "slices of one patient are correlated, so the interval is too narrow")
    if len(case_ids) < 2:
        # Every resample of one slice is that slice: the "interval" of a point with one draw was the point itself.
        note = (f"{len(case_ids)} test slice: resampling it gives it back every time, so an interval spans only the "
                "draws of patients (NA for a point with one draw)")
    return np.arange(len(case_ids), dtype=np.int64), len(case_ids), note


def _unit_confusions(pred: torch.Tensor, labels: torch.Tensor, unit: torch.Tensor, units: int,
                     num_classes: int) -> torch.Tensor:
    """(units, C, C) confusions (rows = target class) of predicted vs label maps (B, H, W), slice i counted in
    unit ``unit[i]``: integer counts, so summing them over chunks of a test set gives those of the whole."""
    target = labels.long()
    if target.numel() and (int(target.max()) >= num_classes or int(pred.max()) >= num_classes):
        raise ValueError(f"class ids beyond the {num_classes} classes of the experiment's table")
    index = (unit.long()[:, None, None] * num_classes + target) * num_classes + pred.long()
    return torch.bincount(index.reshape(-1), minlength=units * num_classes ** 2).reshape(units, num_classes,
                                                                                         num_classes)


def _dice_of(conf: torch.Tensor, organs: Sequence[int]) -> np.ndarray:
    """Dice per class of a (C, C) confusion; the last entry is the mean over the ``organs`` (class ids)
    that have one (``labels.organ_ids``: background and body left out).

    A class no test slice (of this resample) shows has no Dice, whatever a model predicts: scored 0 for
    a model that marks a few pixels of it and NaN for one that marks none, it would enter the first's
    organ mean only, and models (the curve's arms) would be averaged over different classes."""
    d = np.asarray(per_class_scores(conf)["dice"], dtype=np.float64)
    d[(conf.sum(dim=1) == 0).numpy()] = math.nan
    scored = d[list(organs)]
    scored = scored[~np.isnan(scored)]
    return np.append(d, scored.mean() if scored.size else math.nan)


def bootstrap_draws(confs: torch.Tensor, n_boot: int, seed: int,
                    organs: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Dice (as ``_dice_of``) of all units and of ``n_boot`` resamples of them (n_boot, C + 1).

    The resampled units depend only on ``seed`` and the number of units, so
    draws of two settings scored on the same test set are paired: draw i of
    each resamples the same test patients, and their difference is the paired
    bootstrap of the difference.
    """
    g = np.random.default_rng(seed)
    draws = np.stack([_dice_of(confs[torch.from_numpy(g.integers(0, len(confs), len(confs)))].sum(0), organs)
                      for _ in range(n_boot)])
    return _dice_of(confs.sum(0), organs), draws


def interval(draws: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 2.5 and 97.5 % percentiles of each column; NaN for a class no test slice shows (said as such)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy's "All-NaN slice" for such a class
        return np.nanpercentile(draws, 2.5, axis=0), np.nanpercentile(draws, 97.5, axis=0)


def bootstrap_dice(confs: torch.Tensor, n_boot: int, seed: int,
                   organs: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dice per class and its 2.5 / 97.5 % bootstrap percentiles; the last column is the organ mean."""
    point, draws = bootstrap_draws(confs, n_boot, seed, organs)
    return (point, *interval(draws))


def score_confusions(models: Mapping[str, torch.nn.Module], test: SliceSet | TestCases, unit: np.ndarray,
                     units: int, num_classes: int) -> dict[str, torch.Tensor]:
    """Per model its (units, C, C) confusions on the test slices, read once, a part at a time; each model
    predicts in ``predict``'s batches over the whole set, so its predictions are those of one call."""
    confs = {name: torch.zeros(units, num_classes, num_classes, dtype=torch.int64) for name in models}

    def scorer(name: str, model: torch.nn.Module):
        def add(images: torch.Tensor, labels: torch.Tensor, where: torch.Tensor) -> None:
            pred = predict(model, images, batch=len(images))
            confs[name] += _unit_confusions(pred, labels, where, units, num_classes)
        return add

    runs = [Rebatch(scorer(name, model), PREDICT_BATCH) for name, model in models.items()]
    at = 0
    for part in [test] if isinstance(test, SliceSet) else test:
        where = torch.from_numpy(unit[at:at + len(part)])
        for run in runs:
            run.push(part.images, part.labels, where)
        at += len(part)
    for run in runs:
        run.close()
    return confs
