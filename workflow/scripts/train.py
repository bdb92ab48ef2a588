"""Snakemake script: train (or resume) one experiment."""

from pathlib import Path

import torch

from medsynth.data.labels import LabelTable
from medsynth.logs import log_to
from medsynth.train.data import SliceSet
from medsynth.train.loop import TrainSettings, train

with log_to(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    sm = snakemake  # noqa: F821
    torch.set_num_threads(sm.threads)  # the CPU share Snakemake gave this job
    settings = TrainSettings.from_dict(dict(sm.params.settings))

    def load(files):
        return SliceSet.from_files([(Path(f).parent.name, Path(f)) for f in files])

    train(
        settings,
        LabelTable.from_config(sm.params.labels).num_classes,
        load(sm.input.train),
        load(sm.input.val),
        Path(sm.params.run_dir),
        config={"train": dict(sm.params.settings), "labels": list(sm.params.labels)},
    )
