"""Snakemake script: the model card, completed with the test metrics, beside the generator and shared."""

from pathlib import Path

from medsynth.evaluation.utility_curve import findings
from medsynth.io.logs import log_to
from medsynth.io.tables import read_tsv
from medsynth.sharing.copied_maps import case_rows, left_out_by_generation
from medsynth.sharing.model_card import shared_audit, spacing_by_dataset, write_cards

with log_to(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    sm = snakemake  # noqa: F821
    # With generate_from datasets: the cases generation left out (a test patient's study), by its rule.
    left_out = left_out_by_generation(case_rows({Path(p).parent.name: Path(p) for p in sm.input.case_tables}),
                                      {Path(p).parent.name: Path(p) for p in sm.input.split_tables}) \
        if "case_tables" in sm.input.keys() else None
    audit = shared_audit(Path(sm.input.audit) if "audit" in sm.input.keys() else None, sm.params.refuse_flagged,
                         left_out)
    # The utility curve in sentences, or why it was not run.
    utility = findings(read_tsv(sm.input.utility)) if "utility" in sm.input.keys() else [sm.params.utility_skipped]
    write_cards(Path(sm.input.generator), Path(sm.input.metrics), dict(sm.params.licences), Path(sm.output.card),
                Path(sm.output.shared), dict(sm.params.source_licences), audit, utility,
                spacing_by_dataset(sm.input.meta))
