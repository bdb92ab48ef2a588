"""A dataset's patients and its test patients, as far as they are known when the workflow loads its config.

The split is a function of the cases table alone (``split.split_table``: the hash of
(seed, patient id), and a small-cohort rule that needs the whole cohort), so the test
patients can be computed before any job runs wherever the cases are known then: a
phantom cohort (its ids follow from ``n_cases``), a local cases table or folder found by
``layout`` (a glob, no volume is read), or a url dataset's ``cases.tsv`` once downloaded.
Where they are not known yet, the export checks again when it runs (``export.leaked_cases``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from medsynth.data.cohort import discover_cases, patient_of, read_cases
from medsynth.data.phantom.ids import case_ids
from medsynth.data.split import split_table
from medsynth.io.tables import read_tsv

# Where the download writes a dataset's cases table, relative to Snakemake's working directory.
CASES_TSV = "resources/raw/{dataset}/cases.tsv"


def known_cases(name: str, dataset: Mapping, workdir: Path = Path()) -> list[dict[str, str]] | None:
    """``case_id`` and ``patient_id`` of each case the download will list; None when not known yet.

    A table or folder the download would refuse counts as not known: the download names the problem.
    """
    source = dataset.get("source")
    try:
        if source == "phantom":
            n = (dataset.get("phantom") or {}).get("n_cases")
            return None if n is None else [{"case_id": c, "patient_id": c} for c in case_ids(int(n))]
        if source == "local":
            rows = local_rows(dataset)
            return None if rows is None else _ids(rows)
        table = Path(workdir) / CASES_TSV.format(dataset=name)
        if source == "url" and table.is_file():
            return _ids(read_cases(table))
    except (OSError, ValueError, KeyError):
        return None
    return None


def local_rows(dataset: Mapping) -> list[dict[str, str]] | None:
    """The rows a local dataset's download will register: its cases table's, or the files its layout finds
    under ``local.root``; None when it has neither. Raises as ``read_cases``/``discover_cases`` do."""
    local, layout = dataset.get("local") or {}, dataset.get("layout") or {}
    if local.get("cases_table"):
        return read_cases(Path(local["cases_table"]), labelled="labels" in dataset)
    if local.get("root") and layout:
        label_root = Path(layout["label_root"]) if layout.get("label_root") else None
        return discover_cases(Path(local["root"]), layout, label_root)
    return None


def listing_digest(dataset: Mapping) -> str | None:
    """A digest of the cases a local dataset lists (``local_rows``), for the download's params: an edited
    cases table (a patient id filled in, a case withdrawn) or a study added to the folder reruns the download
    and the split after it, where the config alone would not, and a stale split would train on, or export,
    a test patient's study. Comments, row order and file times change nothing. None for other sources; an
    unreadable listing gets a digest of its error, which the download then reports."""
    if dataset.get("source") != "local":
        return None
    try:
        rows = local_rows(dataset)
    except (OSError, ValueError, KeyError) as exc:
        rows = f"{type(exc).__name__}: {exc}"
    text = json.dumps(rows, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _ids(rows: Iterable[Mapping[str, str]]) -> list[dict[str, str]]:
    return [{"case_id": r["case_id"], "patient_id": patient_of(r)} for r in rows]


class KnownPatients:
    """Each dataset's patients and (for a split dataset) their parts, computed once per config load."""

    def __init__(self, config: Mapping, workdir: str | Path = Path()):
        self.datasets = config.get("datasets") or {}
        self.split = config.get("split") or {}
        self.workdir = Path(workdir)
        self._cases: dict[str, list[dict[str, str]] | None] = {}
        self._parts: dict[str, dict[str, str] | None] = {}

    def cases(self, dataset: str) -> list[dict[str, str]] | None:
        if dataset not in self._cases:
            ds = self.datasets.get(dataset)
            self._cases[dataset] = known_cases(dataset, ds, self.workdir) if isinstance(ds, Mapping) else None
        return self._cases[dataset]

    def patients(self, dataset: str) -> set[str] | None:
        """Every patient of the dataset (a generate_from dataset's: all its label maps are generated for)."""
        rows = self.cases(dataset)
        return None if rows is None else {r["patient_id"] for r in rows}

    def parts(self, dataset: str) -> dict[str, str] | None:
        """patient id -> split part, as the split stage will write it; None when the cases or the split
        settings are not known, or the cohort cannot be split (the split stage says why)."""
        if dataset not in self._parts:
            rows, ratios, seed = self.cases(dataset), self.split.get("ratios"), self.split.get("seed")
            try:
                self._parts[dataset] = None if rows is None or ratios is None or seed is None else {
                    r["patient_id"]: r["part"] for r in split_table(rows, ratios, seed)}
            except (ValueError, KeyError, TypeError):
                self._parts[dataset] = None
        return self._parts[dataset]

    def in_parts(self, dataset: str, parts: Sequence[str]) -> set[str] | None:
        """The patients of the dataset in the given split parts; None when not known."""
        by_patient = self.parts(dataset)
        return None if by_patient is None else {p for p, part in by_patient.items() if part in parts}

    def test(self, dataset: str) -> set[str] | None:
        return self.in_parts(dataset, ("test",))


def patients_in_test(split_tables: Mapping[str, Path]) -> dict[str, str]:
    """patient id -> the first dataset (by name) whose ``split.tsv`` puts the patient in test."""
    out: dict[str, str] = {}
    for dataset in sorted(split_tables):
        for row in read_tsv(split_tables[dataset]):
            if row["part"] == "test":
                out.setdefault(row["patient_id"], dataset)
    return out


def listed(patients: Iterable[str], limit: int = 10) -> str:
    """Patient ids for a message: sorted, the first ``limit`` and how many in all."""
    ids = sorted(patients)
    shown = ", ".join(ids[:limit])
    return shown if len(ids) <= limit else f"{shown}, … ({len(ids)} in all)"
