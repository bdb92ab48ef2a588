"""Snakemake script: deterministic patient-level split."""

import logging

from medsynth.data.cohort import read_cases
from medsynth.data.split import PARTS, SPLIT_COLUMNS, split_table
from medsynth.io.tables import write_tsv
from medsynth.io.logs import log_to

with log_to(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    sm = snakemake  # noqa: F821
    rows = split_table(read_cases(sm.input.cases), sm.params.settings["ratios"], sm.params.settings["seed"])
    write_tsv(sm.output.split, rows, SPLIT_COLUMNS)
    for part in PARTS:
        cases = [r["case_id"] for r in rows if r["part"] == part]
        patients = {r["patient_id"] for r in rows if r["part"] == part}
        logging.getLogger("medsynth").info("%s: %d patients, %d cases %s", part, len(patients), len(cases), cases)
