"""Snakemake script: synthetic cases for the generate.splits parts (PNG + NIfTI on the source grid)."""

from pathlib import Path

from medsynth.generate import MANIFEST_COLUMNS, generate_cases
from medsynth.io.tables import read_tsv, write_tsv
from medsynth.logs import log_to
from medsynth.train.loop import resolve_device

with log_to(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    sm = snakemake  # noqa: F821
    s = sm.params.settings
    parts = {r["case_id"]: r["part"] for r in read_tsv(sm.input.split)}
    cases = [(Path(p).parent.name, Path(p), Path(m).parent, parts[Path(p).parent.name])
             for p, m in zip(sm.input.slices, sm.input.meta)]
    rows = generate_cases(
        Path(sm.input.generator), cases, Path(sm.output.cases), s["samples"], s["seed"], s["batch_size"],
        resolve_device(s["device"]),
    )
    write_tsv(sm.output.manifest, rows, MANIFEST_COLUMNS)
