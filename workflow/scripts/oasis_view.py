"""Snakemake script: train|val|test/images|labels folders (links to the slice PNGs)."""

from pathlib import Path

from medsynth.data.views import oasis_view
from medsynth.io.tables import read_tsv
from medsynth.io.logs import log_to

with log_to(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    sm = snakemake  # noqa: F821
    parts = {row["case_id"]: row["part"] for row in read_tsv(sm.input.split)}
    oasis_view(parts, {Path(p).parent.name: Path(p) for p in sm.input.png}, Path(sm.output[0]))
