"""Snakemake script: say why a case cannot be preprocessed (it never succeeds; see preprocess_inputs)."""

from pathlib import Path

from medsynth.data.cohort import case_problems
from medsynth.io.logs import log_to

with log_to(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    sm = snakemake  # noqa: F821
    case = sm.wildcards.case
    problems = case_problems(Path(sm.input.cases), case, sm.params.outputs)
    if not problems:
        problems = [f"case {case!r}: its files and folders are in place now; run snakemake again"]
    raise SystemExit(f"case {case!r} of dataset {sm.wildcards.dataset!r} cannot be preprocessed:\n  "
                     + "\n  ".join(problems))
