"""Snakemake script: the utility curve, organ-mean Dice against the number of real training patients."""

from pathlib import Path

from medsynth.io.logs import log_to
from medsynth.io.tables import read_tsv
from medsynth.reporting.utility_plots import utility_curve_plot

with log_to(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    sm = snakemake  # noqa: F821
    utility_curve_plot(read_tsv(sm.input.table), read_tsv(sm.input.draws), Path(sm.output.figure),
                       dpi=sm.params.settings["dpi"], experiment=sm.wildcards.experiment)
