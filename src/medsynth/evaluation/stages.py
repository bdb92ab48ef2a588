"""The evaluate and utility rules' work as functions of their files. The rules' scripts pass Snakemake's
inputs in and write the tables; the memory test and ``bench/memory.py`` run exactly the same calls, so
what they measure is what a rule's ``mem_mb`` must hold."""

from __future__ import annotations

import functools
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from medsynth.evaluation.memorisation_audit import (MEMORISATION_COLUMNS, GeneratedSlices, generated_images,
                                                    memorisation_cases, memorisation_features, memorisation_summary)
from medsynth.evaluation.class_intensity import INTENSITY_COLUMNS, class_intensity, intensity_summary
from medsynth.evaluation.test_metrics import (CASE_COLUMNS, COLUMNS, SEG_COLUMNS, evaluate_cases, read_metas,
                                              segmentation_consistency, segmentation_summary)
from medsynth.evaluation.utility import patients_of
from medsynth.evaluation.utility_curve import COLUMNS as UTILITY_COLUMNS, DRAW_COLUMNS, utility_curve
from medsynth.evaluation.utility_data import TestCases, load_training_pool, synthetic_cases
from medsynth.evaluation.utility_resume import Resumable, Straight
from medsynth.evaluation.volume_metrics import three_plane_summary, through_plane_summary
from medsynth.io.kept import MISSING, Kept
from medsynth.io.stamps import code_digest, digest_of, file_stamps
from medsynth.io.tables import write_tsv
from medsynth.metrics.segmentation import SegmenterRecipe
from medsynth.models.segmenter import load_segmenter

log = logging.getLogger(__name__)

# evaluate's tables (its outputs' names) and their columns.
EVALUATE_TABLES = {"memorisation": MEMORISATION_COLUMNS, "segmentation": SEG_COLUMNS,
                   "class_intensity": INTENSITY_COLUMNS, "metrics": COLUMNS, "per_case": CASE_COLUMNS}
# evaluate's parts, in the order they run, each kept for a retry once finished (``evaluate_experiment``):
# features, the generated slices' Inception features (~1 GB at AutoPET's scale: hours of a CPU's time).
EVALUATE_PARTS = ("features", "cases", "segmentation", "class_intensity", "through_plane", "three_plane",
                  "memorisation")
EVALUATE_WORK_DIR = "evaluate.unfinished"  # beside the rule's tables


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


def evaluate_experiment(inputs: EvaluateInputs, settings: EvaluateSettings, device: torch.device,
                        work_dir: Path | None = None) -> dict[str, list[dict]]:
    """Every test metric of a generated test set against the image dataset's test slices, with the
    memorisation audit against its training slices: ``EVALUATE_TABLES``' rows by name. ``work_dir`` (the
    workflow): each finished part (``EVALUATE_PARTS``) is kept there under ``evaluate_key``, and a run
    stopped midway leaves them for the next, which computes only the others; ``write_evaluate`` removes it."""
    i, s = inputs, settings
    parts = Parts(Kept(work_dir), evaluate_key(i, s) if work_dir is not None else "")
    metas, reference_metas = read_metas(i.meta), read_metas(i.reference_meta)
    generated = functools.cache(lambda: generated_images(i.cases))
    # The generated slices' Inception features, computed once: for FID/KID and for the audit in feature space.
    features = functools.cache(lambda: _features(parts, generated(), i, s, device))
    summary, per_case = parts("cases", lambda: evaluate_cases(
        i.cases, s.paired, i.reference, real_stats=Path(i.real_stats), perceptual=s.metrics, device=device,
        fake_features=None if features() is None else features()[0]))
    seg = parts("segmentation", lambda: segmentation_consistency(
        None if i.segmenter is None else Path(i.segmenter), i.cases, i.reference, s.names, s.reference_names,
        device, s.not_computed))
    intensity = parts("class_intensity", lambda: class_intensity(
        i.cases, s.paired, i.reference, s.names, metas, reference_metas, reference_names=s.reference_names,
        not_computed=s.not_computed))
    through = parts("through_plane", lambda: through_plane_summary(i.cases, i.reference, metas, reference_metas))
    three = parts("three_plane", lambda: three_plane_summary(i.cases, i.reference, metas, reference_metas,
                                                             s.metrics, device))
    copies, pixel_audit, feature_audit = parts("memorisation", lambda: memorisation_cases(
        generated(), i.train_reference, i.reference, s.metrics["memorisation_threshold"], features(), device))
    summary = [*summary, *segmentation_summary(seg), intensity_summary(intensity), *through, *three,
               *memorisation_summary(pixel_audit, feature_audit)]
    return {"memorisation": copies, "segmentation": seg, "class_intensity": intensity, "metrics": summary,
            "per_case": per_case}


def _features(parts: Parts, generated: GeneratedSlices, i: EvaluateInputs, s: EvaluateSettings,
              device: torch.device) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """``memorisation_features``; only the generated slices' are kept (the real test and training slices' are
    read back from ``real_stats`` and ``train_stats``, inputs of the rule)."""
    made = []

    def compute() -> np.ndarray | None:
        made.append(memorisation_features(generated, Path(i.real_stats), Path(i.train_stats), s.metrics, device))
        return None if made[0] is None else made[0][0]

    gen = parts("features", compute)
    if made or gen is None:
        return made[0] if made else None
    with np.load(i.real_stats) as real, np.load(i.train_stats) as train:
        return gen, real["features"], train["features"]


def evaluate_key(inputs: EvaluateInputs, settings: EvaluateSettings) -> str:
    """What every part of evaluate depends on (one key for all: they read the same files): the rule's input
    files by size and time (each generated ``samples.npz`` and real ``slices.npz``, the metas, the
    reference and training slices, the Inception statistics, the segmenter), the cases' ids, the settings
    but ``metrics.batch_size`` (how fast, not what, as generation's key leaves its batch out) and medsynth's
    code. The device is not in it: a retry on another GPU keeps the first's parts."""
    i, s = inputs, settings
    files = [*(p for case in i.cases for p in case[1:]), *i.meta, *i.reference, *i.reference_meta,
             *i.train_reference, i.real_stats, i.train_stats, *([] if i.segmenter is None else [i.segmenter])]
    kept = {"paired": s.paired, "metrics": {k: v for k, v in s.metrics.items() if k != "batch_size"},
            "names": list(s.names), "not_computed": s.not_computed,
            "reference_names": None if s.reference_names is None else list(s.reference_names)}
    return digest_of({"files": file_stamps(files), "cases": [c[0] for c in i.cases], "settings": kept,
                      "code": code_digest()})


class Parts:
    """evaluate's parts, each taken from ``kept`` under ``key`` when an earlier run finished it, else
    computed and kept. Reads every kept part up front, to say in the log which are done."""

    def __init__(self, kept: Kept, key: str):
        self.kept, self.key = kept, key
        self.values = {name: kept.get(name, key) for name in EVALUATE_PARTS}
        done = [name for name, value in self.values.items() if value is not MISSING]
        if done:
            log.info("resuming: parts %s already done", ", ".join(done))

    def __call__(self, name: str, compute: Callable[[], Any]) -> Any:
        if self.values[name] is MISSING:
            self.values[name] = compute()
            self.kept.put(name, self.key, self.values[name])
        return self.values[name]


def write_evaluate(outputs: Mapping[str, str | Path], tables: Mapping[str, list[dict]], work_dir: Path | None) -> None:
    """Write evaluate's tables (``outputs``: the rule's, by ``EVALUATE_TABLES``' names), then remove the kept
    parts: only once every table is on disk are they of no more use."""
    for name, columns in EVALUATE_TABLES.items():
        write_tsv(outputs[name], tables[name], columns)
    Kept(work_dir).remove()


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
    Kept(work_dir).remove()
