"""Snakemake script: per-class intensity of generated vs real test images as a box plot."""

from pathlib import Path

from medsynth.io.logs import log_to
from medsynth.reporting.plots import class_intensity_plot

with log_to(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    sm = snakemake  # noqa: F821
    class_intensity_plot(Path(sm.input.table), Path(sm.output.figure), dpi=sm.params.settings["dpi"])
