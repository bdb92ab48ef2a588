"""Snakemake script: preprocess one case."""

from pathlib import Path

from medsynth.data.labels import LabelTable
from medsynth.data.preprocess import PreprocessSettings, preprocess_case
from medsynth.logs import log_to

with log_to(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    sm = snakemake  # noqa: F821
    s = dict(sm.params.settings)
    settings = PreprocessSettings(
        modality=sm.params.modality,
        spacing_xy=s.get("spacing_xy"),
        ct_window=tuple(s["ct_window"]),
        ct_soft_window=tuple(s["ct_soft_window"]) if s.get("ct_soft_window") else None,
        ct_soft_share=s["ct_soft_share"],
        mr_percentiles=tuple(s["mr_percentiles"]),
        body_threshold_hu=s["body_threshold_hu"],
        mr_body_fraction=s["mr_body_fraction"],
        opening_mm=s["opening_mm"],
    )
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
