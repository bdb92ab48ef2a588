"""Snakemake script: deterministic patient-level split."""

import logging

from medsynth.data.cohort import read_cases
from medsynth.data.split import (PARTS, SPLIT_COLUMNS, cases_as_patients, same_study_cases, small_cohort_moves,
                                 split_table)
from medsynth.io.tables import write_tsv
from medsynth.io.logs import log_to

with log_to(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    sm = snakemake  # noqa: F821
    cases = read_cases(sm.input.cases)
    rows = split_table(cases, sm.params.settings["ratios"], sm.params.settings["seed"])
    log = logging.getLogger("medsynth")
    # Before the table is written: a refused split leaves nothing for a training to start from.
    for warning in same_study_cases(cases, {r["case_id"]: r["part"] for r in rows}, sm.input.cases):
        log.warning(warning)
    write_tsv(sm.output.split, rows, SPLIT_COLUMNS)
    for move in small_cohort_moves(rows, sm.params.settings["ratios"], sm.params.settings["seed"]):
        log.warning(move)
    unnamed = cases_as_patients(cases, sm.input.cases)
    if unnamed:
        log.warning(unnamed)
    for part in PARTS:
        cases = [r["case_id"] for r in rows if r["part"] == part]
        patients = {r["patient_id"] for r in rows if r["part"] == part}
        log.info("%s: %d patients, %d cases %s", part, len(patients), len(cases), cases)
