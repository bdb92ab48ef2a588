"""Snakemake script: generate the test set (PNG + NIfTI on the source grid)."""

from pathlib import Path

from medsynth.generate import MANIFEST_COLUMNS, generate_cases
from medsynth.io.tables import write_tsv
from medsynth.logs import log_to
from medsynth.train.loop import resolve_device

with log_to(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    sm = snakemake  # noqa: F821
    s = sm.params.settings
    cases = [(Path(p).parent.name, Path(p), Path(m).parent) for p, m in zip(sm.input.slices, sm.input.meta)]
    rows = generate_cases(
        Path(sm.input.generator), cases, Path(sm.output.cases), s["samples"], s["seed"], s["batch_size"],
        resolve_device(s["device"]),
    )
    write_tsv(sm.output.manifest, rows, MANIFEST_COLUMNS)
