"""Snakemake script: the low-data utility curve, segmenters on k real patients, with and without synthetic
images of other patients' label maps, and on synthetic images only, scored on the real test split."""

from pathlib import Path

import torch

from medsynth.data.labels import LabelTable, table_names
from medsynth.evaluation.stages import UtilityInputs, UtilitySettings, utility_experiment, write_utility
from medsynth.evaluation.utility_resume import WORK_DIR
from medsynth.io.logs import log_to
from medsynth.metrics.segmentation import SegmenterRecipe
from medsynth.models.devices import resolve_device

with log_to(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    sm = snakemake  # noqa: F821
    torch.set_num_threads(sm.threads)
    # The image dataset's real slices in the experiment's classes, matched by name (planned only when it
    # labels every one of them).
    inputs = UtilityInputs(
        real_model=Path(sm.input.real_model), real_train=sm.input.real_train, label_train=sm.input.label_train,
        manifest=Path(sm.input.manifest), cases_dir=Path(sm.input.cases), test=sm.input.test,
        split=Path(sm.input.split))
    settings = UtilitySettings(
        names=LabelTable.from_config(sm.params.labels).names, image_names=table_names(sm.params.image_labels),
        source=f"the image dataset {sm.params.image_dataset}", segmenter=SegmenterRecipe.from_settings(sm.params.segmenter),
        utility=sm.params.utility)
    # Each finished training is kept beside the tables until both are written: Snakemake deletes a job's
    # outputs before running it again, and a retry after the time limit takes up the kept trainings.
    work_dir = Path(sm.output.table).with_name(WORK_DIR)
    rows, draws = utility_experiment(inputs, settings, resolve_device("auto"), work_dir)
    write_utility(Path(sm.output.table), Path(sm.output.draws), rows, draws, work_dir)
