"""The evaluate and utility rules' work as functions of their files. The rules' scripts pass Snakemake's
inputs in and write the tables; the memory test and ``bench/memory.py`` run exactly the same calls, so
what they measure is what a rule's ``mem_mb`` must hold."""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping, Sequence

import torch

from medsynth.evaluation.memorisation_audit import (MEMORISATION_COLUMNS, generated_images, memorisation_cases,
                                                    memorisation_features, memorisation_summary)
from medsynth.evaluation.class_intensity import INTENSITY_COLUMNS, class_intensity, intensity_summary
from medsynth.evaluation.test_metrics import (CASE_COLUMNS, COLUMNS, SEG_COLUMNS, evaluate_cases, read_metas,
                                              segmentation_consistency, segmentation_summary)
from medsynth.evaluation.utility import patients_of
from medsynth.evaluation.utility_curve import COLUMNS as UTILITY_COLUMNS, DRAW_COLUMNS, utility_curve
from medsynth.evaluation.utility_data import TestCases, load_training_pool, synthetic_cases
from medsynth.evaluation.utility_resume import Resumable, Straight
from medsynth.evaluation.volume_metrics import three_plane_summary, through_plane_summary
from medsynth.io.tables import write_tsv
from medsynth.metrics.segmentation import SegmenterRecipe
from medsynth.models.segmenter import load_segmenter

# evaluate's tables (its outputs' names) and their columns.
EVALUATE_TABLES = {"memorisation": MEMORISATION_COLUMNS, "segmentation": SEG_COLUMNS,
                   "class_intensity": INTENSITY_COLUMNS, "metrics": COLUMNS, "per_case": CASE_COLUMNS}


@dataclass(frozen=True)
class EvaluateInputs:
    """The evaluate rule's files. ``cases``: (case id, real slices, generated samples) of the generated test
    set (``generate_cases.generated_cases``); ``reference``: the image dataset's test slices; ``train_reference``:
    its training slices (the memorisation audit); ``segmenter`` None: an image-only image dataset."""
    cases: Sequence[tuple[str, Path, Path]]
    meta: Sequence[Path]
    reference: Sequence[Path]
    reference_meta: Sequence[Path]
    train_reference: Sequence[Path]
    real_stats: Path
    train_stats: Path
    segmenter: Path | None


@dataclass(frozen=True)
class EvaluateSettings:
    """``metrics``: the metrics settings (with ``batch_size``); ``names``: the experiment's classes;
    ``reference_names`` None: an image-only image dataset, which ``not_computed`` says in the tables."""
    paired: bool
    metrics: Mapping
    names: Sequence[str]
    reference_names: Sequence[str] | None
    not_computed: str


def evaluate_experiment(inputs: EvaluateInputs, settings: EvaluateSettings,
                        device: torch.device) -> dict[str, list[dict]]:
    """Every test metric of a generated test set against the image dataset's test slices, with the
    memorisation audit against its training slices: ``EVALUATE_TABLES``' rows by name."""
    i, s = inputs, settings
    metas, reference_metas = read_metas(i.meta), read_metas(i.reference_meta)
    # The generated slices' Inception features, computed once: for FID/KID and for the audit in feature space.
    generated = generated_images(i.cases)
    features = memorisation_features(generated, Path(i.real_stats), Path(i.train_stats), s.metrics, device)
    summary, per_case = evaluate_cases(i.cases, s.paired, i.reference,
                                       real_stats=Path(i.real_stats), perceptual=s.metrics, device=device,
                                       fake_features=None if features is None else features[0])
    seg = segmentation_consistency(None if i.segmenter is None else Path(i.segmenter), i.cases, i.reference, s.names,
                                   s.reference_names, device, s.not_computed)
    summary += segmentation_summary(seg)
    intensity = class_intensity(i.cases, s.paired, i.reference, s.names, metas, reference_metas,
                                reference_names=s.reference_names, not_computed=s.not_computed)
    summary.append(intensity_summary(intensity))
    summary += through_plane_summary(i.cases, i.reference, metas, reference_metas)
    summary += three_plane_summary(i.cases, i.reference, metas, reference_metas, s.metrics, device)
    copies, pixel_audit, feature_audit = memorisation_cases(generated, i.train_reference, i.reference,
                                                            s.metrics["memorisation_threshold"], features, device)
    summary += memorisation_summary(pixel_audit, feature_audit)
    return {"memorisation": copies, "segmentation": seg, "class_intensity": intensity, "metrics": summary,
            "per_case": per_case}


@dataclass(frozen=True)
class UtilityInputs:
    """The utility rule's files: the image dataset's segmenter (training (a) with every patient), real training
    slices and test slices with its ``split.tsv``; generate's ``manifest`` and ``cases_dir``, and the slices of
    the label cases it generated for (``label_train``: the training label maps' and generate_from's)."""
    real_model: Path
    real_train: Sequence[Path]
    label_train: Sequence[Path]
    manifest: Path
    cases_dir: Path
    test: Sequence[Path]
    split: Path


@dataclass(frozen=True)
class UtilitySettings:
    """``names``: the experiment's classes; ``image_names``: the image dataset's, relabelled into them by name
    (``source`` names that dataset in messages); ``segmenter``: how every segmenter of the curve trains (the
    segmenter rule's recipe); ``utility``: the ``utility`` section."""
    names: Sequence[str]
    image_names: Sequence[str]
    source: str
    segmenter: SegmenterRecipe
    utility: Mapping


def utility_experiment(inputs: UtilityInputs, settings: UtilitySettings, device: torch.device,
                       work_dir: Path | None = None) -> tuple[list[dict], list[dict]]:
    """The utility curve's tables (``utility_curve.COLUMNS`` and ``DRAW_COLUMNS`` rows): the real training
    slices and every synthetic one in one float16 set, the test slices read a case at a time, all in the
    experiment's classes. ``work_dir`` (the workflow): each finished training is kept there, and a run
    stopped midway leaves them for the next with the same inputs, settings and code (``utility_resume``);
    ``write_utility`` removes it."""
    i, s = inputs, settings
    patients = patients_of(Path(i.split))
    synthetic = synthetic_cases(Path(i.manifest), i.label_train, Path(i.cases_dir))
    pool = load_training_pool(i.real_train, patients, s.image_names, s.names, synthetic, s.source)
    model, model_names = load_segmenter(Path(i.real_model), device)
    # (a) with every patient is the segmenter rule's model when it knows the experiment's classes in their
    # order; otherwise it is trained on the relabelled slices, like every other point.
    reuse = model if tuple(model_names) == tuple(s.names) else None
    store = Straight() if work_dir is None else Resumable(
        work_dir, [*i.real_train, *i.label_train, i.manifest, *(c.samples for c in synthetic), *i.test, i.split],
        {"recipe": asdict(s.segmenter), "utility": s.utility, "names": list(s.names),
         "image_names": list(s.image_names)}, reused=None if reuse is None else Path(i.real_model))
    return utility_curve(pool, TestCases(i.test, s.image_names, s.names, s.source), patients, s.names, s.segmenter,
                         s.utility, device, reuse, store)


def write_utility(table: Path, draws_table: Path, rows: list[dict], draws: list[dict], work_dir: Path | None) -> None:
    """Write the curve's tables, then remove the kept trainings: only once both tables are on disk are
    they of no more use (a job killed between the two keeps them for its retry)."""
    write_tsv(draws_table, draws, DRAW_COLUMNS)
    write_tsv(table, rows, UTILITY_COLUMNS)
    if work_dir is not None:
        shutil.rmtree(work_dir, ignore_errors=True)
