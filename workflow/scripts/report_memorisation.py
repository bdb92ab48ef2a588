"""Snakemake script: the memorisation audit's closest generated/training pairs."""

from pathlib import Path

from medsynth.evaluation.memorisation_audit import memorisation_pairs_panels
from medsynth.io.logs import log_to
from medsynth.reporting.plots import memorisation_pairs

with log_to(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    sm = snakemake  # noqa: F821
    panels = memorisation_pairs_panels(Path(sm.input.table), Path(sm.input.cases), sm.input.real,
                                       sm.input.train_reference, count=8)
    memorisation_pairs(Path(sm.output.figure), panels, dpi=sm.params.settings["dpi"])
