"""Config checks that keep every test patient out of anything shared, as far as the datasets' cases are known
when the workflow loads its config (``data.patients.KnownPatients``; the export checks the rest when it runs).

The test part is what evaluate scores and what anyone scores a model trained on the export with; a test
patient's label map or image in an exported (or generated-for) training set makes those scores lie.
"""

from __future__ import annotations

from typing import Mapping

from medsynth.data.cohort import generated_id_clashes
from medsynth.data.patients import KnownPatients, listed


def leakage_errors(config: Mapping, known: KnownPatients) -> list[str]:
    """Test patients in what an experiment exports, as far as the datasets' cases are known now
    (the export refuses the rest when it runs: ``export.leaked_cases``)."""
    return [*export_test_errors(config, known), *generate_from_trained_errors(config, known),
            *generate_from_patient_errors(config, known), *export_cross_errors(config, known),
            *generated_id_errors(config, known)]


def generated_id_errors(config: Mapping, known: KnownPatients) -> list[str]:
    """Two cases of an experiment's datasets that generation would write into one folder, every own case
    counted (not only the generate.splits parts: a later run may add one) (``data.cohort.
    generated_id_clashes``): a generate_from row would then point at, and the export ship, the other case's
    volume, a test case's among them. The datasets not known yet are checked by common.smk once downloaded."""
    errors = []
    for name, exp in sorted((config.get("experiments") or {}).items()):
        if not exp.get("generate_from"):
            continue
        rows = {d: known.cases(d) for d in [exp["dataset"], *exp["generate_from"]]}
        cases = {d: [r["case_id"] for r in found] for d, found in rows.items() if found is not None}
        errors += [f"config: {m}" for m in generated_id_clashes(name, exp["dataset"], cases)]
    return errors


def _patients_of(known: KnownPatients, dataset: str, patients: set[str] | None = None) -> str:
    shown = known.test(dataset) if patients is None else patients
    if shown is None:
        return "patients known once it is downloaded and split"
    return f"patients {listed(shown)}" if shown else "no patients yet"


def _experiment_datasets(exp: Mapping) -> list[tuple[str, str]]:
    """(key, dataset) of what an experiment trains, validates and tests on: images_from in unpaired mode only."""
    unpaired = (exp.get("train") or {}).get("mode") == "unpaired"
    return [(k, exp[k]) for k in ("dataset", "images_from") if exp.get(k) and (k == "dataset" or unpaired)]


def export_parts(config: Mapping) -> list[str]:
    """The parts the export ships: export.splits, else generate.splits other than test (as common.smk)."""
    return list((config.get("export") or {}).get("splits") or
                [p for p in (config.get("generate") or {}).get("splits", ["test"]) if p != "test"])


def export_test_errors(config: Mapping, known: KnownPatients) -> list[str]:
    if "test" not in ((config.get("export") or {}).get("splits") or []):
        return []
    head = "config: export.splits holds test"
    tail = "; remove test from export.splits (by default it ships generate.splits' other parts)"
    experiments = config.get("experiments") or {}
    if not experiments:
        return [f"{head}: the test patients must stay out of anything shared{tail}"]
    real = bool((config.get("export") or {}).get("include_real"))
    errors = []
    for name in sorted(experiments):
        shipped = [d for key, d in _experiment_datasets(experiments[name]) if key == "dataset" or real]
        what = " and ".join(f"datasets.{d}'s test part ({_patients_of(known, d)})" for d in shipped)
        errors.append(f"{head}: experiments.{name}'s export would ship {what}, the patients evaluate scores "
                      f"the generator on and whoever trains on the export must test on{tail}")
    return errors


def generate_from_trained_errors(config: Mapping, known: KnownPatients) -> list[str]:
    """A generate_from dataset that an experiment trains on has test patients, whose label maps would become
    exported training cases."""
    experiments = config.get("experiments") or {}
    trained: dict[str, str] = {}
    for name in sorted(experiments):
        for key in ("dataset", "images_from"):
            if experiments[name].get(key):
                trained.setdefault(experiments[name][key], f"experiments.{name}.{key}")
    return [f"config: experiments.{name}.generate_from names {other!r}, which {trained[other]} trains, validates "
            f"and tests on: the label maps of its test part ({_patients_of(known, other)}) would become exported "
            "training cases; generate from datasets no experiment trains on (e.g. label maps of other patients)"
            for name in sorted(experiments) for other in experiments[name].get("generate_from", [])
            if other in trained]


def generate_from_patient_errors(config: Mapping, known: KnownPatients) -> list[str]:
    """A generate_from dataset (never split: every case is generated for) holding a test patient of the
    experiment's own datasets."""
    experiments, errors = config.get("experiments") or {}, []
    trained = {e.get(k) for e in experiments.values() for k in ("dataset", "images_from")}
    for name in sorted(experiments):
        for other in experiments[name].get("generate_from", []):
            patients = known.patients(other) if other not in trained else None
            for key, dataset in _experiment_datasets(experiments[name]) if patients else []:
                leaked = patients & (known.test(dataset) or set())
                if leaked:
                    errors.append(
                        f"config: experiments.{name}.generate_from names {other!r}, whose "
                        f"{_patients_of(known, other, leaked)} are in the test part of datasets.{dataset} "
                        f"(experiments.{name}.{key}): their synthetic cases would be exported as training cases; "
                        f"remove those patients' cases from datasets.{other}")
    return errors


def export_cross_errors(config: Mapping, known: KnownPatients) -> list[str]:
    """Unpaired: a patient in both datasets, exported from one and in the other's test part. The split puts
    one patient id in the same part of every dataset, except where the small-cohort rule moved it."""
    parts, errors = [p for p in export_parts(config) if p != "test"], []  # test: export_test_errors
    real = bool((config.get("export") or {}).get("include_real"))
    experiments = config.get("experiments") or {}
    for name in sorted(experiments) if parts else []:
        pairs = dict(_experiment_datasets(experiments[name]))
        if "images_from" not in pairs or pairs["images_from"] == pairs["dataset"]:
            continue
        checks = [("export.splits", "synthetic", pairs["dataset"], pairs["images_from"])]
        checks += [("export.include_real", "real", pairs["images_from"], pairs["dataset"])] if real else []
        for key, kind, shipped, other in checks:
            leaked = (known.in_parts(shipped, parts) or set()) & (known.test(other) or set())
            if leaked:
                errors.append(
                    f"config: {key} ships experiments.{name}'s {kind} cases of datasets.{shipped}'s {'/'.join(parts)} "
                    f"part, but its {_patients_of(known, shipped, leaked)} are in the test part of datasets.{other} "
                    "(a tiny cohort's split moved them there); remove those patients' cases from one of the two "
                    "datasets, or add patients to the smaller one")
    return errors
