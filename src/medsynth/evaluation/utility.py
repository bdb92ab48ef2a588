"""Does synthetic data help? The project's segmenter trained on real, synthetic and real + synthetic
training images, each scored on the real test split with bootstrap confidence intervals.

The three trainings share everything but their training images: the same U-Net,
steps, batch, learning rate and seed as the ``segmenter`` rule's (which is training
(a) itself, so it is reused, not retrained). Synthetic images are the generated
samples of the training label maps (every sample, each with its label map); the test
split is the image dataset's real test cases, never seen by any of the three.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from medsynth.data.labels import ORGAN_MEAN, organ_ids, organ_note
from medsynth.data.slice_batches import Rebatch
from medsynth.io.tables import read_tsv
from medsynth.metrics.segmentation import PREDICT_BATCH, per_class_scores, predict, train_segmenter
from medsynth.data.slice_set import SliceSet
from medsynth.evaluation.utility_data import TestCases, relabelling

SETTINGS = ("real", "synthetic", "real+synthetic")
COLUMNS = ["setting", "class", "dice", "ci_low", "ci_high", "delta_vs_real", "delta_ci_low", "delta_ci_high",
           "train_slices", "test_cases", "test_patients", "note"]
MIN_PATIENTS = 5  # fewer test patients: resample slices instead (and say so)
DEFAULT_REAL_SHARE = 0.75  # real+synthetic: synthetic slices as augmentation, a quarter of each batch


def patients_of(split_tsv: Path) -> dict[str, str]:
    """Case id -> patient id, from a dataset's ``results/split/<dataset>/split.tsv``."""
    return {row["case_id"]: row["patient_id"] for row in read_tsv(split_tsv)}


def _unit_of(case_ids: Sequence[str], patients: Mapping[str, str]) -> tuple[np.ndarray, int, str]:
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
    that have one (``labels.organ_ids``: background and body left out)."""
    d = np.asarray(per_class_scores(conf)["dice"], dtype=np.float64)
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


def _interval(draws: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(all="ignore"):
        return np.nanpercentile(draws, 2.5, axis=0), np.nanpercentile(draws, 97.5, axis=0)


def bootstrap_dice(confs: torch.Tensor, n_boot: int, seed: int,
                   organs: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dice per class and its 2.5 / 97.5 % bootstrap percentiles; the last column is the organ mean."""
    point, draws = bootstrap_draws(confs, n_boot, seed, organs)
    return (point, *_interval(draws))


def utility_rows(real_model: torch.nn.Module | None, real_train: SliceSet, synthetic: SliceSet,
                 test: SliceSet | TestCases, names: Sequence[str], seg: Mapping, n_boot: int = 1000, seed: int = 0,
                 device: torch.device | None = None, real_share: float = DEFAULT_REAL_SHARE, *,
                 patients: Mapping[str, str], both: SliceSet | None = None) -> list[dict]:
    """Rows of ``COLUMNS``: per setting, each class and the organ mean (``ORGAN_MEAN``) with its interval,
    and (synthetic, real+synthetic) the difference to real with its paired bootstrap interval.

    Every set is labelled in the experiment's table ``names`` (``in_table``). ``real_model``: training (a)
    when it was trained in those classes (the segmenter rule's), else None and it is trained here.
    ``patients``: the test cases' patients (``patients_of``), the bootstrap's units. ``test``: the test
    slices, or ``TestCases`` (read a case at a time). ``both``: real then synthetic slices in one set when
    the caller holds them so (``load_training_sets``), else they are joined here (a copy of both).
    """
    models = _trained(real_model, real_train, synthetic, len(names), seg, device, real_share, both)
    unit, units, note = _unit_of(test.case_ids, patients)
    confusions = _test_confusions({s: m for s, (m, _) in models.items()}, test, unit, units, len(names))
    organs = organ_ids(names)
    rows, scored = [], {}
    for setting in SETTINGS:
        n_train = models[setting][1]
        point, draws = scored[setting] = bootstrap_draws(confusions[setting], n_boot, seed, organs)
        lo, hi = _interval(draws)
        delta = point - scored["real"][0]
        delta_lo, delta_hi = _interval(draws - scored["real"][1])
        mean_note = f"{note}; {organ_note([names[i] for i in organs if not math.isnan(point[i])])}"
        for i, cls in enumerate([*names, ORGAN_MEAN]):
            other = setting != "real"
            rows.append({"setting": setting, "class": cls, "dice": float(point[i]), "ci_low": float(lo[i]),
                         "ci_high": float(hi[i]), "delta_vs_real": float(delta[i]) if other else None,
                         "delta_ci_low": float(delta_lo[i]) if other else None,
                         "delta_ci_high": float(delta_hi[i]) if other else None,
                         "train_slices": n_train, "test_cases": len(set(test.case_ids)),
                         "test_patients": len({patients[c] for c in test.case_ids}),
                         "note": mean_note if cls == ORGAN_MEAN else note})
    return rows


def _test_confusions(models: Mapping[str, torch.nn.Module], test: SliceSet | TestCases, unit: np.ndarray,
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


def _trained(real_model: torch.nn.Module | None, real_train: SliceSet, synthetic: SliceSet, num_classes: int,
             seg: Mapping, device: torch.device | None, real_share: float,
             both: SliceSet | None = None) -> dict[str, tuple[torch.nn.Module, int]]:
    """Per setting, its segmenter and how many training slices it had.

    real+synthetic draws a real slice with probability ``real_share`` and a
    synthetic one otherwise, so the mix does not depend on how many samples
    per label map were generated. Every segmenter trains from the float16
    storage, converting a batch at a time (``train_segmenter``).
    """
    if both is None:
        both = SliceSet(torch.cat([real_train.images, synthetic.images]),
                        torch.cat([real_train.labels, synthetic.labels]),
                        torch.cat([real_train.masks, synthetic.masks]), [], [])
    if len(both) != len(real_train) + len(synthetic):
        raise ValueError(f"utility: {len(both)} slices in real+synthetic, {len(real_train)} real and "
                         f"{len(synthetic)} synthetic")
    draw = torch.cat([torch.full((len(real_train),), real_share / len(real_train), dtype=torch.float64),
                      torch.full((len(synthetic),), (1 - real_share) / len(synthetic), dtype=torch.float64)])
    models = {} if real_model is None else {"real": (real_model, len(real_train))}
    for name, data, weights in (("real", real_train, None), ("synthetic", synthetic, None),
                                ("real+synthetic", both, draw)):
        if name not in models:
            models[name] = (train_segmenter(data.images, data.labels, num_classes, steps=seg["segmenter_steps"],
                                            batch_size=seg["segmenter_batch"], device=device,
                                            channels=tuple(seg["segmenter_channels"]), sample_weights=weights),
                            len(data))
    return models


def in_table(data: SliceSet, names: Sequence[str], target: Sequence[str], source: str) -> SliceSet:
    """``data``, labelled by the table ``names``, relabelled into the table ``target`` by name (``source``
    names the data in messages). A class ``target`` does not name becomes its body: a table's body is the
    tissue it does not name, and every pixel needs a class to train on."""
    lookup = relabelling(names, target, source)
    if lookup is None:
        return data
    labels = torch.from_numpy(lookup[data.labels.numpy()])
    return SliceSet(data.images, labels, data.masks, data.case_ids, data.z)
