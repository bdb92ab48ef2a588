"""Snakemake script: synthetic cases for the generate.splits parts and the generate_from datasets."""

from pathlib import Path

from medsynth.data.cohort import generated_case_id
from medsynth.inference.generate_cases import MANIFEST_COLUMNS, GenerateSettings, LabelCase, generate_cases
from medsynth.inference.held_out import generate_from_patients, leave_out_test_cases
from medsynth.io.tables import read_tsv, write_tsv
from medsynth.io.logs import log_to
from medsynth.models.devices import resolve_device

with log_to(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    sm = snakemake  # noqa: F821
    # params hold what decides the images; the device and batch size (how fast) and the PNGs (files for
    # people, none downstream) are not params, so changing them reruns nothing: they come from the config.
    s = {**sm.params.settings, **{k: sm.config["generate"][k] for k in ("batch_size", "device", "pngs")}}
    own = sm.params.dataset
    split = {r["case_id"]: r for r in read_tsv(sm.input.split)}
    # Warns (here: no split job reads a generate_from dataset) where a table names no patients.
    extra = generate_from_patients(sm.input.case_tables)
    cases = []
    for slices, meta in zip(sm.input.slices, sm.input.meta):
        case, dataset = Path(slices).parent.name, Path(slices).parents[2].name  # results/slices/<d>/cases/<c>/
        if dataset == own:
            row = split[case]
            cases.append(LabelCase(case, Path(slices), Path(meta).parent, row["part"], dataset, case,
                                   row["patient_id"]))
        else:  # a generate_from dataset's case ids may repeat the experiment's own: its folder is <dataset>.<case>
            cases.append(LabelCase(generated_case_id(dataset, case, own), Path(slices), Path(meta).parent,
                                   "generate_from", dataset, case, extra[(dataset, case)]))
    if sm.input.get("test_splits") is not None:
        # A test patient's study in a generate_from dataset (by patient id, or its label map's bytes) is left out.
        sources = {c.case_id: f for c, f in zip(cases, sm.input.source_label)}
        tables = {Path(t).parent.name: Path(t) for t in sm.input.test_splits}  # results/split/<dataset>/split.tsv
        cases = leave_out_test_cases(cases, sources, tables, list(sm.input.test_labels))
    settings = GenerateSettings(s["samples"], s["seed"], s["batch_size"], resolve_device(s["device"]), s["noise"],
                                s["noise_sigma_mm"], s["inplane"], s["pngs"] == "all")
    # Cases are written beside the output first and kept there when the job is stopped (a time limit):
    # Snakemake deletes a job's outputs before running it again, and the retry takes up the closed cases.
    out = Path(sm.output.cases)
    # A generate_from dataset's label maps go through its own label table (the config's, as its preprocessing's;
    # a change of it reruns that preprocessing and so this job).
    tables = {c.dataset: sm.config["datasets"][c.dataset]["labels"] for c in cases if c.part == "generate_from"}
    rows = generate_cases(Path(sm.input.generator), cases, out, settings, work_dir=out.with_name("cases.unfinished"),
                          tables=tables)
    write_tsv(sm.output.manifest, rows, MANIFEST_COLUMNS)
