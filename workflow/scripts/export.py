"""Snakemake script: an nnU-Net v2 raw dataset of the synthetic (and real) training cases."""

from pathlib import Path

from medsynth.data.labels import LabelTable
from medsynth.sharing.nnunet_export import export_experiment
from medsynth.io.logs import log_to

with log_to(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    sm = snakemake  # noqa: F821
    s = sm.params.settings
    real = ((Path(sm.input.real_cases), Path(sm.input.real_split), LabelTable.from_config(sm.params.real_labels))
            if "real_cases" in sm.input.keys() else None)
    splits = {Path(p).parent.name: Path(p) for p in sm.input.split_tables}  # results/split/<dataset>/split.tsv
    tables = {Path(p).parent.name: Path(p) for p in sm.input.case_tables}  # resources/raw/<dataset>/cases.tsv
    export_experiment(sm.wildcards.experiment, Path(sm.input.manifest), real,
                      Path(sm.output[0]), s, sm.params.naming, sm.params.labels, sm.params.modality, splits,
                      audit=Path(sm.input.audit), case_tables=tables, licences=sm.params.licences)
