"""Snakemake script: Dice per class for the real / synthetic / real + synthetic segmenters."""

from pathlib import Path

from medsynth.io.tables import read_tsv
from medsynth.io.logs import log_to
from medsynth.reporting.plots import utility_plot

with log_to(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    sm = snakemake  # noqa: F821
    utility_plot(read_tsv(sm.input.table), Path(sm.output.figure), dpi=sm.params.settings["dpi"])
