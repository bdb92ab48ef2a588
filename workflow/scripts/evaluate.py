"""Snakemake script: test-set metrics."""

from pathlib import Path

from medsynth.evaluate import CASE_COLUMNS, COLUMNS, evaluate_cases
from medsynth.io.tables import write_tsv
from medsynth.logs import log_to
from medsynth.train.loop import resolve_device

with log_to(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    sm = snakemake  # noqa: F821
    gen_dir = Path(sm.input.cases)
    cases = [(Path(p).parent.name, Path(p), gen_dir / Path(p).parent.name / "samples.npz") for p in sm.input.real]
    summary, per_case = evaluate_cases(cases, sm.params.mode == "paired", sm.input.reference,
                                       real_stats=Path(sm.input.real_stats), perceptual=sm.params.metrics,
                                       device=resolve_device("auto"))
    write_tsv(sm.output.metrics, summary, COLUMNS)
    write_tsv(sm.output.per_case, per_case, CASE_COLUMNS)
