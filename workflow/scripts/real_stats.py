"""Snakemake script: Inception statistics of a dataset split's real images (once, cached)."""

from pathlib import Path

from medsynth.data.slice_batches import slice_chunks
from medsynth.io.logs import log_to
from medsynth.metrics.perceptual import save_real_stats
from medsynth.models.devices import resolve_device

with log_to(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    sm = snakemake  # noqa: F821
    # metrics.batch_size changes only how fast: from the config, not a params trigger.
    settings = {**sm.params.settings, "batch_size": sm.config["metrics"]["batch_size"]}
    # A case at a time, in the order of the case ids (the memorisation audit's training slices follow it).
    images = (chunk[:, None] for chunk, in slice_chunks(sm.input.slices, ("images",)))
    save_real_stats(images, Path(sm.output[0]), settings, resolve_device("auto"))
