"""Snakemake script: choose the checkpoint by the validation metric; export it with its model card."""

from pathlib import Path

import medsynth
from medsynth.io.logs import log_to
from medsynth.sharing.model_card import card_before_selection, dataset_entry
from medsynth.sharing.selection import select_checkpoint

with log_to(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    sm = snakemake  # noqa: F821
    card, data = sm.params.card, dict(sm.params.data)
    slices = [list(sm.input.slices), list(sm.input.image_slices)]
    datasets = [dataset_entry(name, role, card["datasets"][name], Path(split), [Path(p) for p in files])
                for (name, role), split, files in zip(card["roles"], sm.input.splits, slices)]
    model_card = card_before_selection(
        sm.wildcards.experiment, datasets, data["labels"], data["modality"], data["preprocess"],
        [Path(p) for p in sm.input.meta], card["train"], card["slice_size"], Path(sm.params.run_dir) / "jobs.tsv",
        medsynth.__version__)
    select_checkpoint(Path(sm.params.run_dir), sm.params.metric, Path(sm.output.selected), Path(sm.output.generator),
                      fallback=sm.params.fallback, data=data, card=model_card)
