"""Snakemake script: segmenters trained on real, synthetic and real + synthetic images, on the real test split."""

from pathlib import Path

import torch

from medsynth.data.labels import LabelTable
from medsynth.io.tables import write_tsv
from medsynth.logs import log_to
from medsynth.metrics.segmentation import load_segmenter
from medsynth.train.loop import resolve_device
from medsynth.train.run import load_slices
from medsynth.utility import COLUMNS, load_synthetic, utility_rows

with log_to(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    sm = snakemake  # noqa: F821
    torch.set_num_threads(sm.threads)
    device = resolve_device("auto")
    rows = utility_rows(load_segmenter(Path(sm.input.real_model), device), load_slices(sm.input.real_train),
                        load_synthetic(sm.input.label_train, Path(sm.input.cases)), load_slices(sm.input.test),
                        LabelTable.from_config(sm.params.labels).names, sm.params.segmenter,
                        n_boot=sm.params.utility["bootstrap"], seed=sm.params.utility["seed"], device=device,
                        real_share=sm.params.utility["real_share"])
    write_tsv(sm.output[0], rows, COLUMNS)
