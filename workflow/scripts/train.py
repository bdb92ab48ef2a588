"""Snakemake script: train (or resume) one experiment."""

from medsynth.logs import log_to
from medsynth.train.run import run_experiment

with log_to(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    sm = snakemake  # noqa: F821
    run_experiment(
        sm.params.settings,
        sm.params.labels,
        sm.params.run_dir,
        sm.input.train,
        sm.input.val,
        sm.input.get("images_train", []),
        sm.input.get("images_val", []),
        threads=sm.threads,
        perceptual=sm.params.metrics,
        real_stats=sm.input.real_stats,
    )
