"""The evaluate and utility rules' work as functions of their files. The rules' scripts pass Snakemake's
inputs in and write the tables; the memory test and ``bench/memory.py`` run exactly the same calls, so
what they measure is what a rule's ``mem_mb`` must hold."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import torch

from medsynth.evaluation.memorisation_audit import (MEMORISATION_COLUMNS, generated_images, memorisation_cases, memorisation_features,
                            memorisation_summary)
from medsynth.evaluation.test_metrics import (CASE_COLUMNS, COLUMNS, INTENSITY_COLUMNS, SEG_COLUMNS, class_intensity,
                               evaluate_cases, intensity_summary, read_metas, segmentation_consistency,
                               segmentation_summary)
from medsynth.metrics.segmentation import load_segmenter
from medsynth.evaluation.utility import patients_of, utility_rows
from medsynth.evaluation.utility_data import TestCases, load_training_sets
from medsynth.evaluation.volume_metrics import three_plane_summary, through_plane_summary

# evaluate's tables (its outputs' names) and their columns.
EVALUATE_TABLES = {"memorisation": MEMORISATION_COLUMNS, "segmentation": SEG_COLUMNS,
                   "class_intensity": INTENSITY_COLUMNS, "metrics": COLUMNS, "per_case": CASE_COLUMNS}


def evaluate_experiment(cases: Sequence[tuple[str, Path, Path]], *, meta: Sequence[Path],
                        reference: Sequence[Path], reference_meta: Sequence[Path], train_reference: Sequence[Path],
                        real_stats: Path, train_stats: Path, segmenter: Path | None, paired: bool, threshold: float,
                        metrics: dict, names: Sequence[str], reference_names: Sequence[str] | None,
                        not_computed: str, device: torch.device) -> dict[str, list[dict]]:
    """Every test metric of a generated test set (``cases``: ``generate.generated_cases``) against the image
    dataset's test slices (``reference``), with the memorisation audit against its training slices
    (``train_reference``): ``EVALUATE_TABLES``' rows by name. ``metrics``: the metrics settings (with
    ``batch_size``); ``reference_names`` None: an image-only image dataset (``not_computed`` says so)."""
    metas, reference_metas = read_metas(meta), read_metas(reference_meta)
    # The generated slices' Inception features, computed once: for FID/KID and for the audit in feature space.
    generated = generated_images(cases)
    features = memorisation_features(generated, Path(real_stats), Path(train_stats), metrics, device)
    summary, per_case = evaluate_cases(cases, paired, reference, threshold=threshold, real_stats=Path(real_stats),
                                       perceptual=metrics, device=device,
                                       fake_features=None if features is None else features[0])
    seg = segmentation_consistency(None if segmenter is None else Path(segmenter), cases, reference, names,
                                   reference_names, device, not_computed)
    summary += segmentation_summary(seg)
    intensity = class_intensity(cases, paired, reference, names, metas, reference_metas,
                                reference_names=reference_names, not_computed=not_computed)
    summary.append(intensity_summary(intensity))
    summary += through_plane_summary(cases, reference, metas, reference_metas)
    summary += three_plane_summary(cases, reference, metas, reference_metas, metrics, device)
    copies, pixel_audit, feature_audit = memorisation_cases(generated, train_reference, reference,
                                                            metrics["memorisation_threshold"], features)
    summary += memorisation_summary(pixel_audit, feature_audit)
    return {"memorisation": copies, "segmentation": seg, "class_intensity": intensity, "metrics": summary,
            "per_case": per_case}


def utility_experiment(*, real_model: Path, real_train: Sequence[Path], label_train: Sequence[Path], cases_dir: Path,
                       test: Sequence[Path], split: Path, names: Sequence[str], image_names: Sequence[str],
                       source: str, segmenter: Mapping, utility: Mapping, device: torch.device) -> list[dict]:
    """The utility benchmark's rows: the image dataset's real training slices (``real_train``) and the
    generated samples of the label dataset's training label maps (``label_train``, under ``cases_dir``) in
    one float16 set, the test slices (``test``) read a case at a time, both relabelled from the image
    dataset's table ``image_names`` into the experiment's ``names`` (``source`` names it in messages)."""
    sets = load_training_sets(real_train, image_names, names, label_train, Path(cases_dir), source)
    model, model_names = load_segmenter(Path(real_model), device)
    # Training (a) is the segmenter rule's model when it knows the experiment's classes in their order;
    # otherwise utility_rows trains it on the relabelled slices, like (b) and (c).
    return utility_rows(model if tuple(model_names) == tuple(names) else None, sets.real, sets.synthetic,
                        TestCases(test, image_names, names, source), names, segmenter, n_boot=utility["bootstrap"],
                        seed=utility["seed"], device=device, real_share=utility["real_share"],
                        patients=patients_of(Path(split)), both=sets.both)
