"""Snakemake script: preprocess one case (a label-only case when it has no image, an image-only case when it
has no label map)."""

from pathlib import Path

from medsynth.data.label_only import preprocess_label_only
from medsynth.data.labels import LabelTable
from medsynth.data.preprocess import PreprocessSettings, preprocess_case
from medsynth.io.logs import log_to

with log_to(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    sm = snakemake  # noqa: F821
    settings = PreprocessSettings.from_config(sm.params.modality, dict(sm.params.settings))
    table = LabelTable.from_config(sm.params.labels)
    out = Path(sm.output.meta).parent
    mask = Path(sm.input.mask) if "mask" in sm.input.keys() else None
    if "image" in sm.input.keys():
        label = Path(sm.input.label) if "label" in sm.input.keys() else None
        preprocess_case(sm.wildcards.case, Path(sm.input.image), label, out, table, settings,
                        mask_path=mask, qc_path=Path(sm.output.qc), workers=sm.threads, series=dict(sm.params.series))
    else:
        preprocess_label_only(sm.wildcards.case, Path(sm.input.label), out, table, settings, mask_path=mask,
                              qc_path=Path(sm.output.qc), series=dict(sm.params.series))
