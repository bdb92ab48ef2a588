"""Snakemake script: deterministic patient-level split."""

import logging

from medsynth.data.cohort import read_cases
from medsynth.data.split import split_cases
from medsynth.io.tables import write_tsv
from medsynth.logs import log_to

with log_to(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    sm = snakemake  # noqa: F821
    ids = [row["case_id"] for row in read_cases(sm.input.cases)]
    parts = split_cases(ids, sm.params.settings["ratios"], sm.params.settings["seed"])
    write_tsv(sm.output.split, [{"case_id": c, "part": parts[c]} for c in sorted(parts)], ["case_id", "part"])
    for part in ("train", "val", "test"):
        logging.getLogger("medsynth").info("%s: %s", part, [c for c in sorted(parts) if parts[c] == part])
