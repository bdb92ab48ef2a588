"""Snakemake script: choose the checkpoint by the validation metric."""

from pathlib import Path

from medsynth.logs import log_to
from medsynth.select import select_checkpoint

with log_to(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    sm = snakemake  # noqa: F821
    select_checkpoint(Path(sm.params.run_dir), sm.params.metric, Path(sm.output.selected), Path(sm.output.generator),
                      fallback=sm.params.fallback, data=dict(sm.params.data))
