"""Snakemake script: preprocess one case."""

from pathlib import Path

from medsynth.data.labels import LabelTable
from medsynth.data.preprocess import PreprocessSettings, preprocess_case
from medsynth.logs import log_to

with log_to(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    sm = snakemake  # noqa: F821
    settings = PreprocessSettings.from_config(sm.params.modality, dict(sm.params.settings))
    preprocess_case(
        sm.wildcards.case,
        Path(sm.input.image),
        Path(sm.input.label),
        Path(sm.output.meta).parent,
        LabelTable.from_config(sm.params.labels),
        settings,
        mask_path=Path(sm.input.mask) if "mask" in sm.input.keys() else None,
        qc_path=Path(sm.output.qc),
        workers=sm.threads,
    )
