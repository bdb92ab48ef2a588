"""Copies of a test case's label map among what is shared, whatever id they came in under.

The split keeps test patients out by their id. A label map can come back under another id: the
TotalSegmentator output of a test study saved again in a folder that a ``generate_from`` dataset
reads (found as ``{case}.nii.gz``, its patient is its file name), or one study listed twice in a
cases table with two patient ids. Its synthetic twins, and the map itself beside them, would then
ship a test patient's anatomy. The export compares the exported cases' source label files with the
test cases' byte for byte (sizes first, a SHA-256 only where a size matches), the voxels of a map
saved again with other bytes (``same_files.voxel_groups``: grids first), and, for the ``generate_from``
maps, the slices of one cropped from the other (``shared_slices``: every such map and test map read once).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from medsynth.data.cohort import patient_of, read_cases
from medsynth.data.same_files import shared_files
from medsynth.data.shared_slices import copies_resaves_and_crops
from medsynth.inference.held_out import SourceMap, test_case_reasons
from medsynth.io.tables import read_tsv


def test_label_files(rows: Rows, split_tables: Mapping[str, Path]) -> dict[str, str]:
    """label file -> '<dataset> case <id>' of every test case of the split datasets whose cases table rows
    (``rows``: dataset -> case id -> row) are given."""
    out = {}
    for dataset in sorted(split_tables):
        if dataset not in rows:
            continue
        test = {r["case_id"] for r in read_tsv(split_tables[dataset]) if r["part"] == "test"}
        for case_id, row in rows[dataset].items():
            if case_id in test and row.get("label") and Path(row["label"]).is_file():
                out[row["label"]] = f"{dataset} case {case_id}"
    return out


def source_label(provenance: Mapping[str, str], label: Path, rows: Rows) -> str | None:
    """The source label file of an exported case: a synthetic case's is its source case's in its dataset's
    cases table (``rows``: dataset -> case id -> row); a real case's is its own ``label``."""
    if not provenance.get("synthetic"):
        return str(label)
    row = rows.get(provenance.get("dataset", ""), {}).get(provenance.get("source_case", ""))
    return row.get("label") if row else None


Rows = Mapping[str, Mapping[str, Mapping[str, str]]]  # dataset -> case id -> its cases table row


def case_rows(case_tables: Mapping[str, Path]) -> dict[str, dict[str, dict[str, str]]]:
    """dataset -> case id -> row of each ``cases.tsv``: read once for all the checks below."""
    return {d: {r["case_id"]: r for r in read_cases(t)} for d, t in case_tables.items()}


def copies_of_test_maps(cases: Sequence, rows: Rows, split_tables: Mapping[str, Path]) -> list[str]:
    """'<case> (<file>) is a copy of <test case> (<file>)' for every exported case (``ExportCase``) whose
    source label map is a test case's of one of the split datasets, byte for byte, voxel for voxel on its
    grid, or one cropped from the other (``shared_slices``) (``rows``: ``case_rows``)."""
    tests = test_label_files(rows, split_tables)
    if not tests:
        return []
    sources = {case.identifier: source_label(case.provenance, case.label, rows) for case in cases}
    # Crops among the maps of the datasets that are not split (generate_from): each split refused crops
    # within its own dataset; across two split datasets only patient ids are compared (their checks
    # before training), not slices, which would read every training map here.
    split = {r["label"] for d in split_tables for r in rows.get(d, {}).values() if r.get("label")}
    twin, saved_again, cropped = copies_resaves_and_crops(sources.values(), tests, not_for_crops=split)
    found = []
    for case in sorted(sources):
        if sources[case] in twin:
            found.append(f"{case} ({sources[case]}) is a copy of {tests[twin[sources[case]]]} ({twin[sources[case]]})")
        elif sources[case] in saved_again:
            original = saved_again[sources[case]]
            found.append(f"{case} ({sources[case]}) holds the voxels of {tests[original]} ({original}) on its grid, "
                         "saved again")
        elif sources[case] in cropped:
            original, n = cropped[sources[case]]
            found.append(f"{case} ({sources[case]}) shares {n} axial slices with {tests[original]} ({original}): "
                         "one cropped from the other")
    return found


def shared_map_patients(cases: Sequence, rows: Rows) -> dict[str, str]:
    """patient -> the patient whose nnU-Net fold it joins, for the patients of exported cases (``ExportCase``)
    made from identical label maps (the same bytes, or voxels on one grid: a training map listed again under
    another id, e.g. in a ``generate_from`` folder): in two folds, nnU-Net would validate on the anatomy it
    trains on. A group is named by its first patient; patients with maps of their own are not listed
    (``rows``: ``case_rows``)."""
    patients_of: dict[str, set[str]] = {}
    for case in cases:
        src = source_label(case.provenance, case.label, rows)
        if src:
            patients_of.setdefault(src, set()).add(case.patient)
    joined: dict[str, set[str]] = {}
    for _, patients in shared_files(patients_of, voxels=patients_of):
        merged = set().union(*(joined.get(p, {p}) for p in patients))  # and the groups they are in
        for patient in merged:
            joined[patient] = merged
    return {p: min(group) for p, group in joined.items() if len(group) > 1 and min(group) != p}


# What the shared files say of the cases generation left out: how many and why, not which (their ids and
# files name test patients; the generation log, which stays with the run, names them).
LEFT_OUT_WHY = ("generate_from label maps of test patients (by patient id, or a test case's label map under "
                "another id) were not generated; logs/generate/<experiment>.log names them")


def left_out_by_generation(rows: Rows, split_tables: Mapping[str, Path]) -> dict[str, str]:
    """<dataset>.<case> -> why generation left it out (``inference.held_out``: a test patient's study), for
    the cases of the ``generate_from`` datasets among ``rows`` (``case_rows``; those without a
    ``split_tables`` entry): the export and the model card count them (``LEFT_OUT_WHY``)."""
    extra = [SourceMap(f"{d}.{c}", patient_of(r), r.get("label") or "")
             for d in sorted(rows) if d not in split_tables for c, r in sorted(rows[d].items())]
    return test_case_reasons(extra, split_tables, list(test_label_files(rows, split_tables))) if extra else {}
