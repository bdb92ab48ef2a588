"""Snakemake script: Inception statistics of a dataset split's real images (once, cached)."""

from pathlib import Path

from medsynth.logs import log_to
from medsynth.metrics.perceptual import save_real_stats
from medsynth.train.loop import resolve_device
from medsynth.train.run import load_slices

with log_to(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    sm = snakemake  # noqa: F821
    # metrics.batch_size changes only how fast: from the config, not a params trigger.
    settings = {**sm.params.settings, "batch_size": sm.config["metrics"]["batch_size"]}
    save_real_stats(load_slices(sm.input.slices).images, Path(sm.output[0]), settings, resolve_device("auto"))
