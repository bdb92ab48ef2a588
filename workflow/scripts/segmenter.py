"""Snakemake script: the U-Net segmenter behind segmentation consistency, trained on real training slices."""

from pathlib import Path

import torch

from medsynth.data.labels import LabelTable
from medsynth.io.logs import log_to
from medsynth.metrics.segmentation import SegmenterRecipe, train_segmenter
from medsynth.models.segmenter import save_segmenter
from medsynth.models.devices import resolve_device
from medsynth.data.slice_set import load_slices

with log_to(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    sm = snakemake  # noqa: F821
    torch.set_num_threads(sm.threads)
    recipe = SegmenterRecipe.from_settings(sm.params.settings)
    data = load_slices(sm.input.slices)
    names = LabelTable.from_config(sm.params.labels).names
    num_classes = len(names)
    model = train_segmenter(data.images, data.labels, num_classes, recipe, resolve_device("auto"))
    save_segmenter(model, Path(sm.output[0]), num_classes, recipe.channels, names)  # names: read by name later
