"""Snakemake script: the memorisation audit of every synthetic volume the export ships."""

import logging
from pathlib import Path

from medsynth.evaluation.memorisation_audit import EXPORT_AUDIT_COLUMNS, SharedCase, audit_shared
from medsynth.inference.generate_cases import generated_cases, samples_file
from medsynth.io.tables import read_tsv, write_tsv
from medsynth.io.logs import log_to
from medsynth.models.devices import resolve_device

with log_to(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    sm = snakemake  # noqa: F821
    cases_dir = Path(sm.input.cases)
    slices = {(Path(p).parents[2].name, Path(p).parent.name): Path(p) for p in sm.input.shared}
    grid = {(Path(p).parents[1].name, Path(p).parent.name): Path(p) for p in sm.input.grid_labels}
    shared = [SharedCase(r["case_id"], r["patient_id"], slices[(r["dataset"], r["source_case"])],
                         samples_file(cases_dir, r["case_id"]),
                         own=sm.params.paired and r["part"] != "generate_from",
                         grid_label=grid[(r["dataset"], r["source_case"])])
              for r in read_tsv(sm.input.manifest) if r["part"] in sm.params.parts or r["part"] == "generate_from"]
    shared = sorted(set(shared))  # the manifest has a row per sample
    test = [(real, gen) for _, real, gen in generated_cases(sm.input.test, cases_dir)]
    # The nearest-slice search on the job's GPU when it has one (float64 there too: the same slices found).
    rows, summary = audit_shared(shared, sm.input.train_images, sm.input.reference, test, sm.params.paired,
                                 sm.params.threshold, resolve_device("auto"))
    write_tsv(sm.output[0], rows, EXPORT_AUDIT_COLUMNS)
    logging.getLogger("medsynth").info(
        "audited %d exported volumes: %d flagged, %d not audited (threshold %g, own-image unit %.4g, nearest unit "
        "%.4g); the crops audited hold %.1f %% of their labelled voxels", summary["volumes"], summary["flagged"],
        summary["not_audited"], summary["threshold"],
        summary["own_scale"], summary["nearest_scale"], 100 * summary["audited_share"])
