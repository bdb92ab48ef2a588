"""What generation leaves out of the ``generate_from`` cases: a test patient's study under another name.

A ``generate_from`` dataset is never split, so nothing stops a test patient's study from being in it:
listed with the test patient's id, or TotalSegmentator's output of a test study saved again in its folder
(found as ``{case}.nii.gz``, its patient is its file name). Its synthetic images would ship a test
patient's anatomy, and the utility curve would train on the anatomy it is scored on. The export refuses
such a case, but only after generation; generation leaves it out instead, with a warning naming both
files, so a month of training ends in a dataset, not an error.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping, NamedTuple, Sequence

from medsynth.data.cohort import patient_of
from medsynth.data.patients import patients_in_test
from medsynth.data.shared_slices import copies_resaves_and_crops
from medsynth.data.split import names_no_patients
from medsynth.io.tables import read_tsv

log = logging.getLogger(__name__)


class SourceMap(NamedTuple):
    """A ``generate_from`` case as generation and the export know it."""

    case_id: str  # <dataset>.<case>, its id among the experiment's generated cases
    patient_id: str
    label: str  # its source label map


def test_case_reasons(cases: Sequence[SourceMap], split_tables: Mapping[str, Path],
                      test_labels: Sequence[str]) -> dict[str, str]:
    """case id -> why it is a test patient's, for the ``generate_from`` ``cases`` whose patient is in the test
    part of a dataset the generator learnt from (``split_tables``: dataset -> ``split.tsv``) or whose source
    label map has the bytes of a test case's (``test_labels``), its voxels on its grid, or a run of its
    slices (``shared_slices``: one cropped from the other)."""
    test = patients_in_test(split_tables)
    copies, saved_again, cropped = copies_resaves_and_crops([c.label for c in cases if c.patient_id not in test],
                                                            test_labels)
    reasons = {}
    for case in cases:
        if case.patient_id in test:
            reasons[case.case_id] = f"patient {case.patient_id} is in the test part of {test[case.patient_id]}"
        elif case.label in copies:
            reasons[case.case_id] = (f"its label map {case.label} is a test case's ({copies[case.label]}) under "
                                     "another id")
        elif case.label in saved_again:
            reasons[case.case_id] = (f"its label map {case.label} holds a test case's voxels on its grid "
                                     f"({saved_again[case.label]}), saved again under another id")
        elif case.label in cropped:
            original, n = cropped[case.label]
            reasons[case.case_id] = (f"its label map {case.label} shares {n} axial slices with a test case's "
                                     f"({original}), voxel count for voxel count of every label: one cropped "
                                     "from the other, under another id")
    return reasons


def leave_out_test_cases(cases: Sequence, sources: Mapping[str, str], split_tables: Mapping[str, Path],
                         test_labels: Sequence[str]) -> list:
    """``cases`` (``generate_cases.LabelCase``) without the ``generate_from`` ones of test patients
    (``test_case_reasons``; ``sources``: case id -> source label map), each left out with a warning."""
    extra = [SourceMap(c.case_id, c.patient_id, sources[c.case_id]) for c in cases if c.part == "generate_from"]
    reasons = test_case_reasons(extra, split_tables, test_labels)
    for case_id, reason in sorted(reasons.items()):
        log.warning("generate_from case %s left out: %s. Its synthetic images would ship a test patient's "
                    "anatomy; remove it from its dataset (or give it the test case's patient_id) to silence "
                    "this", case_id, reason)
    return [c for c in cases if c.case_id not in reasons]


def generate_from_patients(tables: Sequence[Path]) -> dict[tuple[str, str], str]:
    """(dataset, case) -> patient of the ``generate_from`` datasets' cases (``tables``: their
    ``resources/raw/<dataset>/cases.tsv``), with a warning for a dataset that names no patients.

    Such a dataset is never split, so no split warns (``split.cases_as_patients``), and every case is its own
    patient: ``test_case_reasons`` then finds a test patient's study only by its label map's bytes, voxels or
    slices, and another study of that patient (a later scan, TotalSegmentator's map of it) is generated and exported."""
    patients = {}
    for table in tables:
        dataset, rows = Path(table).parent.name, read_tsv(table)
        if names_no_patients(rows):
            log.warning("%s: generate_from dataset %s names no patients (each of its %d cases is its own patient): "
                        "generation leaves out a test patient's study only by that patient's id or the same "
                        "label map (bytes, voxels, or slices of a crop), so another study of a test patient is generated and "
                        "exported. Give patient ids spelt as the split datasets' are (a patient_id column in its "
                        "cases table, or a {patient} placeholder in datasets.%s.layout)", table, dataset, len(rows),
                        dataset)
        patients.update({(dataset, r["case_id"]): patient_of(r) for r in rows})
    return patients
