"""Snakemake script: test-set metrics."""

from pathlib import Path

from medsynth.data.labels import LabelTable, table_names
from medsynth.inference.generate_cases import generated_cases
from medsynth.io.logs import log_to
from medsynth.evaluation.stages import (EVALUATE_WORK_DIR, EvaluateInputs, EvaluateSettings, evaluate_experiment,
                                       write_evaluate)
from medsynth.models.devices import resolve_device

with log_to(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    sm = snakemake  # noqa: F821
    # metrics.batch_size changes only how fast features are computed: from the config, not a params trigger.
    metrics = {**sm.params.metrics, "batch_size": sm.config["metrics"]["batch_size"]}
    # The image dataset's classes, matched to the experiment's by name; None: image-only (no label maps).
    reference_names = None if sm.params.reference_labels is None else table_names(sm.params.reference_labels)
    inputs = EvaluateInputs(
        generated_cases(sm.input.real, Path(sm.input.cases)), meta=sm.input.meta, reference=sm.input.reference,
        reference_meta=sm.input.reference_meta, train_reference=sm.input.train_reference,
        real_stats=Path(sm.input.real_stats), train_stats=Path(sm.input.train_stats),
        segmenter=sm.input.get("segmenter"))  # an input only when the image dataset is labelled
    settings = EvaluateSettings(
        paired=sm.params.mode == "paired", metrics=metrics,
        names=LabelTable.from_config(sm.params.labels).names, reference_names=reference_names,
        not_computed=f"not computed: the image dataset {sm.params.image_dataset} has no label maps")
    # Each finished part is kept beside the tables until all are written: Snakemake deletes a job's outputs
    # before running it again, and a retry after the time limit takes up the kept parts.
    work_dir = Path(sm.output.metrics).with_name(EVALUATE_WORK_DIR)
    tables = evaluate_experiment(inputs, settings, resolve_device("auto"), work_dir)
    write_evaluate(sm.output, tables, work_dir)
