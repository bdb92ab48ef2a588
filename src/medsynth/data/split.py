"""Deterministic patient-level train/val/test split.

Each patient gets a fixed pseudo-random number from (seed, patient id) alone,
and the parts are intervals of [0, 1) sized by the ratios; every study (case)
of a patient goes where the patient goes, so no patient is both trained on and
tested. A patient's part therefore does not depend on which other patients
exist: adding cases never moves an existing one. Only when a part would be
empty (tiny cohorts) is the patient whose number lies nearest to that part's
interval moved into it, so val and test are never silently empty; such a move
is logged by the split (``small_cohort_moves``), and adding patients can undo
it (the moved patient goes back to its own part once another patient fills the
one it filled).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from medsynth.data.cohort import patient_of, read_cases, series_of
from medsynth.data.same_files import nifti_grid, shared_files
from medsynth.data.shared_slices import overlapping_maps
from medsynth.io.tables import read_tsv

PARTS = ("train", "val", "test")
SPLIT_COLUMNS = ["case_id", "patient_id", "part"]


def case_number(case_id: str, seed: int) -> float:
    """The number in [0, 1) that places an id (a patient's; the case id when cases are patients)."""
    digest = hashlib.sha256(f"{seed}:{case_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_cases(case_ids: Sequence[str], ratios: Mapping[str, float], seed: int,
                patients: Mapping[str, str] | None = None) -> dict[str, str]:
    """Map case id -> part. ``ratios`` has train/val/test fractions summing to 1.

    ``patients`` maps case id -> patient id (default: each case is its own patient);
    all cases of one patient land in one part.
    """
    counts = Counter(case_ids)
    dup = sorted(c for c, n in counts.items() if n > 1)
    if dup:
        raise ValueError(f"duplicate case ids {dup}: every case id must be unique")
    patient = {c: (patients or {}).get(c) or c for c in case_ids}
    by_patient = split_patients(sorted(set(patient.values())), ratios, seed)
    return {c: by_patient[patient[c]] for c in sorted(case_ids)}


def split_patients(patient_ids: Sequence[str], ratios: Mapping[str, float], seed: int) -> dict[str, str]:
    """Map patient id -> part; the rule of the module docstring."""
    numbers, parts = _parts_by_number(patient_ids, ratios, seed)
    bounds = _bounds(ratios)
    needed = [q for q in PARTS if ratios[q] > 0]
    if len(numbers) < len(needed):
        raise ValueError(f"{len(numbers)} patients cannot fill the parts {needed}: add cases or set a ratio to 0")
    for q in needed:
        if q in parts.values():
            continue
        centre = sum(bounds[q]) / 2
        sizes = Counter(parts.values())
        donors = [p for p in numbers if sizes[parts[p]] > 1]
        chosen = min(donors, key=lambda p: (abs(numbers[p] - centre), p))
        parts[chosen] = q
    return parts


def _parts_by_number(patient_ids: Sequence[str], ratios: Mapping[str, float],
                     seed: int) -> tuple[dict[str, float], dict[str, str]]:
    """Each patient's number and the part its number falls in (before the small-cohort rule)."""
    bounds = _bounds(ratios)
    numbers = {p: case_number(p, seed) for p in sorted(patient_ids)}
    parts = {p: next((q for q in PARTS if bounds[q][0] <= u < bounds[q][1]), PARTS[-1]) for p, u in numbers.items()}
    return numbers, parts


def small_cohort_moves(rows: Sequence[Mapping[str, str]], ratios: Mapping[str, float], seed: int) -> list[str]:
    """What to log for each patient of a ``split.tsv``'s rows that the small-cohort rule moved from the part
    its number gives: adding patients can move it back, so such a split is not stable."""
    final = {r["patient_id"]: r["part"] for r in rows}
    _, by_number = _parts_by_number(sorted(final), ratios, seed)
    return [f"split: no patient of {len(final)} falls in {final[p]} by its number, so {p} moves there from "
            f"{by_number[p]}; adding patients can move it back (a tiny cohort's split is not stable)"
            for p in sorted(final) if final[p] != by_number[p]]


def _bounds(ratios: Mapping[str, float]) -> dict[str, tuple[float, float]]:
    total = sum(ratios[p] for p in PARTS)
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"split ratios must sum to 1, got {dict(ratios)} (sum {total})")
    bounds, lo = {}, 0.0
    for p in PARTS:
        bounds[p] = (lo, lo + ratios[p])
        lo += ratios[p]
    return bounds


def split_table(rows: Iterable[Mapping[str, str]], ratios: Mapping[str, float], seed: int) -> list[dict[str, str]]:
    """Rows of ``split.tsv`` (``SPLIT_COLUMNS``, sorted by case id) from the rows of a ``cases.tsv``."""
    rows = list(rows)
    patients = {r["case_id"]: patient_of(r) for r in rows}
    parts = split_cases([r["case_id"] for r in rows], ratios, seed, patients)
    return [{"case_id": c, "patient_id": patients[c], "part": parts[c]} for c in sorted(parts)]


def names_no_patients(rows: Sequence[Mapping[str, str]]) -> bool:
    """True when no row of a cases table names a patient other than its case (no ``patient_id`` column, no
    ``{patient}`` placeholder); False when patient ids are given, or for a single case (nothing tells)."""
    return len(rows) > 1 and all(patient_of(r) == r["case_id"] for r in rows)


def cases_as_patients(rows: Sequence[Mapping[str, str]], table: str) -> str | None:
    """What to say when a cases table names no patients (``names_no_patients``): each case is then its own
    patient, so two studies of one patient can land in train and test. None otherwise."""
    if not names_no_patients(rows):
        return None
    return (f"{table}: no patient ids (every case's patient is the case itself): the split treats each of the "
            f"{len(rows)} cases as its own patient. If a patient has several studies they can fall in "
            "different parts; give patient ids (a patient_id column, or a {patient} placeholder in the layout)")


def same_study_cases(rows: Sequence[Mapping[str, str]], parts: Mapping[str, str], table: str) -> list[str]:
    """Cases of other patients that hold one study (``study_groups``), which the split cannot see. An error
    when they fall in different parts (a held-out study would be trained on, or a test study selected by),
    else the warnings to log."""
    patient = {r["case_id"]: patient_of(r) for r in rows}
    warnings = []
    for cases, why in study_groups(rows):
        if len({patient[c] for c in cases}) < 2:
            continue  # one patient's studies share a part already
        listed = ", ".join(f"{c} (patient {patient[c]}, {parts[c]})" for c in cases)
        text = f"{table}: cases {listed} are one study under two patient ids ({why})"
        if len({parts[c] for c in cases}) > 1:
            raise ValueError(f"{text}, so the generator would train on (or be selected by) a study it is "
                             "tested on. Give these cases one patient_id in the cases table (a patient's "
                             "studies share a part), or remove the copy")
        warnings.append(f"{text}; both are in {parts[cases[0]]}, which keeps the split sound, but give them "
                        "one patient_id")
    return warnings


def study_groups(rows: Sequence[Mapping[str, str]]) -> list[tuple[list[str], str]]:
    """(cases, why) for each set of cases whose image or label files have the same bytes, or whose label
    maps (images where a case has none) the same voxels on the same grid, or whose DICOM folders one
    series (``same_files``: a study saved or exported again; or one file listed twice); then each pair of
    cases whose label maps share a run of axial slices (``shared_slices``: one cropped from the other),
    unless one of those sets holds both already."""
    cases_of: dict[str, set[str]] = {}
    for row in rows:
        for column in ("image", "label"):
            if row.get(column):
                cases_of.setdefault(row[column], set()).add(row["case_id"])
    # By voxels: a case's label map where it has one (read in a fraction of its image's time).
    voxels = [r.get("label") or r.get("image") for r in rows]
    groups = [(sorted(listed_by), "the same bytes, or the same voxels on the same grid, or one DICOM series: "
               + ", ".join(group)) for group, listed_by in shared_files(cases_of, voxels, dicom_folders(rows))]
    together = [set(cases) for cases, _ in groups]
    for a, b, n in overlapping_maps(r["label"] for r in rows if r.get("label")):
        for case_a in sorted(cases_of[a]):
            for case_b in sorted(cases_of[b] - {case_a}):
                if not any({case_a, case_b} <= g for g in together):
                    groups.append((sorted([case_a, case_b]), f"{n} axial slices of their label maps count the "
                                   f"same voxels of every label, one map cropped from the other: {a}, {b}"))
    return groups


def dicom_folders(rows: Iterable[Mapping[str, str]]) -> dict[str, str | None]:
    """Each DICOM series folder the rows name (image or label) -> the series their ``<column>_series`` picks,
    or None (``same_files.series_groups`` reads its first file's)."""
    folders = {}
    for row in rows:
        named = series_of(row)
        for column in ("image", "label"):
            if row.get(column) and Path(row[column]).is_dir():
                folders[row[column]] = named.get(column) or folders.get(row[column])
    return folders


HELD_OUT = ("val", "test")


def crossed_patients(label_rows: Iterable[Mapping[str, str]],
                     image_rows: Iterable[Mapping[str, str]]) -> list[tuple[str, str, str]]:
    """(patient, part in the label dataset, part in the image dataset) of every patient the two ``split.tsv``
    of an unpaired experiment put in different parts: trained on in one and held out in the other, or
    selected by in one (val) and tested on in the other. Patients keep one part across datasets by their
    number, except where the small-cohort rule moved one to fill an empty part (``split_patients``)."""
    label = {r["patient_id"]: r["part"] for r in label_rows}
    image = {r["patient_id"]: r["part"] for r in image_rows}
    return sorted((p, label[p], image[p]) for p in set(label) & set(image) if label[p] != image[p])


def crossed_message(crossed: Sequence[tuple[str, str, str]], label_table: str, image_table: str) -> str:
    """The error ``crossed_patients`` calls for: which patients, where, and what to do."""
    listed = ", ".join(f"{p} ({a} in the label dataset, {b} in the image dataset)" for p, a, b in crossed[:5])
    more = f" and {len(crossed) - 5} more" if len(crossed) > 5 else ""
    return (f"{label_table} and {image_table}: patient(s) {listed}{more} are in different parts of the two "
            "datasets, so the generator would learn from, or be selected by, a patient it is then validated or "
            "tested on. With so few patients the split moved some to fill an empty part; give both datasets "
            "enough patients (or set split.ratios.val to 0), or, if the ids are different people, different "
            "patient ids")


def check_unpaired_splits(label_table: Path, image_table: Path, label_cases: Path | None = None,
                          image_cases: Path | None = None) -> list[str]:
    """Refuse, before an unpaired training starts, a patient in different parts of the two datasets
    (``crossed_patients``); given their cases tables, a study in both under other ids and in different parts
    (``studies_in_both``). The warnings to log: such a study in one part."""
    label_split, image_split = read_tsv(Path(label_table)), read_tsv(Path(image_table))
    crossed = crossed_patients(label_split, image_split)
    if crossed:
        raise ValueError(crossed_message(crossed, str(label_table), str(image_table)))
    # One dataset on both sides (images_from: the label dataset) shares every file with itself: its own
    # split's check covers it.
    if label_cases is None or image_cases is None or Path(label_cases).resolve() == Path(image_cases).resolve():
        return []
    split = {(role, r["case_id"]): r for role, rows in (("label", label_split), ("image", image_split)) for r in rows}
    warnings = []
    for files, cases in studies_in_both(read_cases(Path(label_cases)), read_cases(Path(image_cases))):
        if len({split[c]["patient_id"] for c in cases}) < 2:
            continue  # one patient's studies: crossed_patients keeps them in one part
        listed = ", ".join(f"{case} ({split[(role, case)]['part']} in "
                           f"{label_cases if role == 'label' else image_cases})" for role, case in cases)
        text = (f"{listed} are one study in both datasets (the same bytes, or voxels on one grid, or one DICOM "
                f"series: {', '.join(files)})")
        if len({split[c]["part"] for c in cases}) > 1:
            raise ValueError(f"{text}, so the generator would train on (or be selected by) a study it is tested "
                             "on. Remove the copy from one dataset, or give both cases one patient_id")
        warnings.append(f"{text}; both in {split[cases[0]]['part']}, which keeps the split sound")
    return warnings


def studies_in_both(label_rows: Sequence[Mapping[str, str]],
                    image_rows: Sequence[Mapping[str, str]]) -> list[tuple[list[str], list[tuple[str, str]]]]:
    """(files, ("label" or "image", case id) of each dataset listing them, the label dataset's first) for
    every file in both datasets' cases tables (the same bytes), or image in both (the same voxels on the same
    grid, or one DICOM series): one study under two ids, which the two splits cannot see. Voxels are read only where a grid is in
    both datasets: a cohort resampled to one grid is not read whole."""
    owners: dict[str, set[str]] = {}
    grids: dict[object, dict[str, list[str]]] = {}
    for role, rows in (("label", label_rows), ("image", image_rows)):
        for row in rows:
            for column in ("image", "label"):
                if row.get(column):
                    owners.setdefault(row[column], set()).add(f"{role}\t{row['case_id']}")
            if row.get("image") and (grid := nifti_grid(row["image"])) is not None:
                grids.setdefault(grid, {}).setdefault(role, []).append(row["image"])
    voxels = [f for by_role in grids.values() if len(by_role) == 2 for files in by_role.values() for f in files]
    found = []
    for files, listed_by in shared_files(owners, voxels, dicom_folders([*label_rows, *image_rows])):
        cases = sorted((tuple(owner.split("\t")) for owner in listed_by), key=lambda c: (c[0] != "label", c[1]))
        if len({role for role, _ in cases}) == 2:
            found.append((files, cases))
    return found


def trained_then_held_out(source_tables: Sequence[Path], own_tables: Sequence[Path]) -> list[tuple[str, str, str]]:
    """(patient, its part, the table) of every patient a fine-tuning's source generators trained on (the train
    parts of ``source_tables``, the ``split.tsv`` of their datasets) which this run holds out (val or test in
    ``own_tables``), or were selected by (their val parts) which this run tests on."""
    source = [r for t in source_tables for r in read_tsv(Path(t))]
    trained = {r["patient_id"] for r in source if r["part"] == "train"}
    selected = {r["patient_id"] for r in source if r["part"] == "val"}
    return sorted({(r["patient_id"], r["part"], str(t)) for t in own_tables for r in read_tsv(Path(t))
                   if (r["part"] in HELD_OUT and r["patient_id"] in trained)
                   or (r["part"] == "test" and r["patient_id"] in selected)})


def check_fine_tune_splits(source: str, source_tables: Sequence[Path], own_tables: Sequence[Path]) -> None:
    """Refuse, before a fine-tuning starts, a source generator (``train.init_from``, or one up its chain)
    trained on a patient this run validates or tests on, or selected by one it tests on: its weights already
    hold that patient."""
    leaked = trained_then_held_out(source_tables, own_tables)
    if leaked:
        listed = ", ".join(f"{p} ({part} in {table})" for p, part, table in leaked[:5])
        more = f" and {len(leaked) - 5} more" if len(leaked) > 5 else ""
        raise ValueError(f"train.init_from {source}: the generator it starts from (or one it was fine-tuned "
                         f"from) was trained on, or selected by, patient(s) {listed}{more}, which this "
                         "experiment holds out, so its validation and test would score a patient the weights "
                         "have seen. Start from a generator trained without them (the same patients split the "
                         "same way: one split.seed and split.ratios for both datasets), or from one trained on "
                         "other patients")


def check_training_patients(split: Path, image_split: str | Path | None = None, init_from: str | None = None,
                            source_splits: Sequence[str | Path] | str = (),
                            cases: Sequence[str | Path] = ()) -> list[str]:
    """A training's patient checks, before it starts: unpaired, the two datasets' splits agree on every
    patient they share, and (given ``cases``, the two cases tables) on every study in both
    (``check_unpaired_splits``); fine-tuning from an experiment of the same config (``source_splits``: the
    splits of every dataset up its chain of init_from, ``config.lineage``), its source learnt from no patient
    this run holds out. The warnings to log."""
    own = [Path(split), *([Path(image_split)] if image_split else [])]
    warnings = check_unpaired_splits(own[0], own[1], *map(Path, cases)) if image_split else []
    if source_splits:
        tables = [source_splits] if isinstance(source_splits, (str, Path)) else list(source_splits)
        check_fine_tune_splits(str(init_from), [Path(t) for t in tables], own)
    return warnings
