"""Snakemake script: segmenters trained on real, synthetic and real + synthetic images, on the real test split."""

from pathlib import Path

import torch

from medsynth.data.labels import LabelTable, table_names
from medsynth.io.tables import write_tsv
from medsynth.logs import log_to
from medsynth.metrics.segmentation import load_segmenter
from medsynth.train.loop import resolve_device
from medsynth.train.run import load_slices
from medsynth.utility import COLUMNS, in_table, load_synthetic, patients_of, utility_rows

with log_to(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    sm = snakemake  # noqa: F821
    torch.set_num_threads(sm.threads)
    device = resolve_device("auto")
    names = LabelTable.from_config(sm.params.labels).names
    # The image dataset's real slices in the experiment's classes, matched by name (planned only when it
    # labels every one of them).
    image_names, source = table_names(sm.params.image_labels), f"the image dataset {sm.params.image_dataset}"
    real_train = in_table(load_slices(sm.input.real_train), image_names, names, source)
    test = in_table(load_slices(sm.input.test), image_names, names, source)
    model, model_names = load_segmenter(Path(sm.input.real_model), device)
    # Training (a) is the segmenter rule's model when it knows the experiment's classes in their order;
    # otherwise utility_rows trains it on the relabelled slices, like (b) and (c).
    rows = utility_rows(model if tuple(model_names) == tuple(names) else None, real_train,
                        load_synthetic(sm.input.label_train, Path(sm.input.cases)), test, names, sm.params.segmenter,
                        n_boot=sm.params.utility["bootstrap"], seed=sm.params.utility["seed"], device=device,
                        real_share=sm.params.utility["real_share"], patients=patients_of(Path(sm.input.split)))
    write_tsv(sm.output[0], rows, COLUMNS)
