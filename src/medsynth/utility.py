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

from medsynth.data.labels import BODY, ORGAN_MEAN, class_lookup, organ_ids, organ_note
from medsynth.io.tables import read_tsv
from medsynth.metrics.segmentation import confusion, per_class_scores, predict, train_segmenter
from medsynth.train.data import SliceSet

SETTINGS = ("real", "synthetic", "real+synthetic")
COLUMNS = ["setting", "class", "dice", "ci_low", "ci_high", "delta_vs_real", "delta_ci_low", "delta_ci_high",
           "train_slices", "test_cases", "test_patients", "note"]
MIN_PATIENTS = 5  # fewer test patients: resample slices instead (and say so)
DEFAULT_REAL_SHARE = 0.75  # real+synthetic: synthetic slices as augmentation, a quarter of each batch


def synthetic_set(pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> SliceSet:
    """(labels (n, H, W), samples (K, n, H, W)) per training case -> every sample with its label map."""
    images, labels = [], []
    for lab, samples in pairs:
        for sample in samples:
            images.append(torch.from_numpy(np.asarray(sample, np.float32))[:, None])
            labels.append(torch.from_numpy(np.asarray(lab)))
    if not images:
        raise ValueError("utility: no synthetic training slices; add train to generate.splits")
    imgs, labs = torch.cat(images), torch.cat(labels)
    return SliceSet(imgs, labs, (labs > 0)[:, None], ["synthetic"] * len(labs), [0] * len(labs))


def patients_of(split_tsv: Path) -> dict[str, str]:
    """Case id -> patient id, from a dataset's ``results/split/<dataset>/split.tsv``."""
    return {row["case_id"]: row["patient_id"] for row in read_tsv(split_tsv)}


def _units(pred: torch.Tensor, test: SliceSet, num_classes: int,
           patients: Mapping[str, str]) -> tuple[torch.Tensor, str]:
    """Per resampling unit its (C, C) confusion: a test patient (all its cases: studies of one patient
    are alike, so resampling them apart would make the interval too narrow), or a slice when there are
    few patients."""
    missing = sorted(set(test.case_ids) - set(patients))
    if missing:
        raise ValueError(f"utility: test case(s) {missing[:5]} are not in the image dataset's split.tsv; rerun its "
                         "split (snakemake --forcerun split)")
    groups: dict[str, list[int]] = {}
    for i, case in enumerate(test.case_ids):
        groups.setdefault(patients[case], []).append(i)
    cases = len(set(test.case_ids))
    if len(groups) >= MIN_PATIENTS:
        units = [groups[p] for p in sorted(groups)]
        note = f"95 % bootstrap interval over {len(groups)} test patients ({cases} cases)"
    else:
        units = [[i] for i in range(len(test))]
        note = (f"95 % bootstrap interval over {len(test)} test slices: only {len(groups)} test patient(s), and "
                "slices of one patient are correlated, so the interval is too narrow")
    confs = torch.stack([confusion(pred[g], test.labels[g].long(), num_classes) for g in units])
    return confs, note


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


def utility_rows(real_model: torch.nn.Module | None, real_train: SliceSet, synthetic: SliceSet, test: SliceSet,
                 names: Sequence[str], seg: Mapping, n_boot: int = 1000, seed: int = 0,
                 device: torch.device | None = None, real_share: float = DEFAULT_REAL_SHARE, *,
                 patients: Mapping[str, str]) -> list[dict]:
    """Rows of ``COLUMNS``: per setting, each class and the organ mean (``ORGAN_MEAN``) with its interval,
    and (synthetic, real+synthetic) the difference to real with its paired bootstrap interval.

    Every set is labelled in the experiment's table ``names`` (``in_table``). ``real_model``: training (a)
    when it was trained in those classes (the segmenter rule's), else None and it is trained here.
    ``patients``: the test cases' patients (``patients_of``), the bootstrap's units.
    """
    models = _trained(real_model, real_train, synthetic, len(names), seg, device, real_share)
    organs = organ_ids(names)
    rows, scored = [], {}
    for setting in SETTINGS:
        model, n_train = models[setting]
        confs, note = _units(predict(model, test.images.float()), test, len(names), patients)
        point, draws = scored[setting] = bootstrap_draws(confs, n_boot, seed, organs)
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


def _trained(real_model: torch.nn.Module | None, real_train: SliceSet, synthetic: SliceSet, num_classes: int,
             seg: Mapping, device: torch.device | None, real_share: float) -> dict[str, tuple[torch.nn.Module, int]]:
    """Per setting, its segmenter and how many training slices it had.

    real+synthetic draws a real slice with probability ``real_share`` and a
    synthetic one otherwise, so the mix does not depend on how many samples
    per label map were generated.
    """
    both = SliceSet(torch.cat([real_train.images, synthetic.images]), torch.cat([real_train.labels, synthetic.labels]),
                    torch.cat([real_train.masks, synthetic.masks]), [], [])
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
    if tuple(names) == tuple(target):
        return data
    missing = [n for n in target[1:] if n not in names]
    if missing:
        raise ValueError(f"utility: the label table of {source} lacks {missing} of the experiment's classes "
                         f"{list(target)}: the benchmark scores every class (it is planned only when the image "
                         "dataset labels each of them); label them there")
    lookup = class_lookup(names, target, unknown=list(target).index(BODY)).astype(np.uint8)
    labels = torch.from_numpy(lookup[data.labels.numpy()])
    return SliceSet(data.images, labels, data.masks, data.case_ids, data.z)


def load_synthetic(train_real_files: Sequence[Path], cases_dir: Path) -> SliceSet:
    """The generated samples of the training label maps (generate's samples.npz) with their label maps."""
    from medsynth.data.slicing import CaseSlices
    from medsynth.generate import generated_cases

    pairs = []
    for _, real_path, gen_path in generated_cases(train_real_files, cases_dir):
        real = CaseSlices.load(Path(real_path))
        with np.load(gen_path) as f:
            if not np.array_equal(f["z"], real.z):
                raise ValueError(f"{gen_path}: slices do not match {real_path}; regenerate")
            pairs.append((real.labels, f["samples"].astype(np.float32)))
    return synthetic_set(pairs)
