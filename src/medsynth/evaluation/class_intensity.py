"""Per-class intensity of a generated test set against the real test images: HU for CT (each case's own
curve; unpaired, the image dataset's), [-1, 1] for MR; classes matched to the image dataset's table by
name; every NA cell says why (``class_intensity.tsv``, the ``classes_outside_real_range`` test metric)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from medsynth.data.intensity import IntensityMap
from medsynth.data.labels import BODY, class_lookup
from medsynth.data.slicing import CaseSlices
from medsynth.evaluation.test_metrics import NO_LABELS, load_case, meta_of
from medsynth.metrics import intensity

INTENSITY_COLUMNS = ["class", "unit", *intensity.COLUMNS[1:], "note"]
UNITS = {True: "HU", False: "[-1, 1]"}  # by whether a CT curve converted the images


def intensity_curve(meta: dict) -> IntensityMap | None:
    """A CT case's own curve from [-1, 1] into HU; None for MR, which stays in [-1, 1].

    MR has no absolute scale: its units differ between scanners and cases,
    and each case was mapped onto [-1, 1] by its own percentile window, so
    [-1, 1] is the one scale the cases share (and in unpaired mode the window
    of the case a label map came from says nothing about the image dataset).
    """
    return IntensityMap.from_meta(meta["intensity"]) if meta["modality"] == "CT" else None


NOT_IN_TABLE = "not compared: the image dataset's label table has no class of this name"
BODY_DIFFERS = ("the two label tables name different classes: the body (the tissue a table does not name) "
                "holds different tissue on the two sides")


def class_intensity(cases: Sequence[tuple[str, Path, Path]], paired: bool, reference_files: Sequence[Path],
                    class_names: Sequence[str], metas: dict[str, dict], reference_metas: dict[str, dict], *,
                    reference_names: Sequence[str] | None, not_computed: str = NO_LABELS) -> list[dict]:
    """Per-class intensity of the generated test set vs real test images: rows of ``INTENSITY_COLUMNS``.

    Generated: every sample of every case (``cases`` as for ``evaluate_cases``),
    in the label maps it was generated from. Real: the image dataset's test
    slices (``reference_files``) in their own labels, whose table ``reference_names``
    names: matched to ``class_names`` by name (its classes the experiment's table
    lacks are left out; a class it lacks has NaN real statistics, noted). None (an
    image-only dataset): no real side, every row noted ``not_computed``.
    ``metas`` and ``reference_metas`` map case ids to their ``meta.json`` (``read_metas``).
    CT is compared in HU: each real case through its own curve; a generated
    image through its case's curve in paired mode and, in unpaired mode, the
    image dataset's, whose [-1, 1] the generator learned to imitate (a CT
    dataset's curve comes from its settings, one for all its cases).
    """
    n = len(class_names)
    real, generated = intensity.ClassIntensityCounts(n), intensity.ClassIntensityCounts(n)
    lookup = None if reference_names is None else class_lookup(reference_names, class_names)
    reference_curves: dict[IntensityMap | None, Path] = {}
    for path in reference_files:
        curve = intensity_curve(meta_of(reference_metas, Path(path)))
        reference_curves.setdefault(curve, Path(path))
        if lookup is not None:
            slices = CaseSlices.load(Path(path))
            labels = lookup[slices.labels.astype(np.int64)]
            known = labels >= 0
            real.add(slices.images[known], labels[known], curve, str(path))
    if not paired and len(reference_curves) > 1:  # the generated side needs the one curve of the dataset
        files = ", ".join(str(p) for p in reference_curves.values())
        raise ValueError(f"real test cases with different intensity curves ({files}): their meta.json files come "
                         "from different preprocessing settings; rerun the preprocessing of that dataset")
    shared = next(iter(reference_curves), None)
    for case_id, real_path, gen_path in sorted(cases):
        slices, fakes = load_case(real_path, gen_path)
        curve = intensity_curve(meta_of(metas, Path(real_path))) if paired else shared
        for fake in fakes:
            generated.add(fake, slices.labels, curve, str(gen_path))
    rows = intensity.compare(generated.stats(), real.stats(), class_names)
    notes = _intensity_notes(class_names, reference_names, not_computed)
    return [{"class": r["class"], "unit": UNITS[shared is not None], **r, "note": _row_note(r, note)}
            for r, note in zip(rows, notes)]


def _intensity_notes(class_names: Sequence[str], reference_names: Sequence[str] | None,
                     not_computed: str) -> list[str]:
    """Per class, why its real side is missing or what to mind (the body when the tables differ)."""
    if reference_names is None:
        return [not_computed] * len(class_names)
    absent = class_lookup(class_names, reference_names) < 0
    differ = set(class_names[1:]) != set(reference_names[1:])
    return [NOT_IN_TABLE if absent[i] else BODY_DIFFERS if differ and name == BODY else ""
            for i, name in enumerate(class_names)]


NO_PIXELS = "not compared: no {} test pixel of this class"
NO_SPREAD = "std_ratio NA: every real pixel of this class has one value (no spread to compare with)"


def _row_note(row: Mapping, note: str) -> str:
    """A class row's note: the tables' reason, else why its numbers are NA (no pixel of the class on a
    side; no real spread for the ratio)."""
    if note not in ("", BODY_DIFFERS):  # not computed / not in the table: the real side is missing altogether
        return note
    side = "real" if not row["voxels_real"] else "generated" if not row["voxels_generated"] else None
    why = NO_PIXELS.format(side) if side else NO_SPREAD if not row["std_real"] > 0 else ""
    return "; ".join(n for n in (note, why) if n)


def intensity_summary(rows: Sequence[dict]) -> dict:
    """``class_intensity``'s flags as one test metric: how many classes, and which (note), and which classes
    could not be compared for want of labels; NaN with the reason when none could."""
    names = intensity.flagged(rows)
    compared = sum(1 for r in rows if r["voxels_real"] > 0 and r["voxels_generated"] > 0)
    notes = {r.get("note", "") for r in rows}
    if len(notes) == 1 and next(iter(notes)).startswith("not computed"):  # no real side at all
        return {"metric": "classes_outside_real_range", "mean": math.nan, "std": math.nan, "n": 0,
                "note": next(iter(notes))}
    absent = [r["class"] for r in rows if r.get("note") == NOT_IN_TABLE]
    empty = [r["class"] for r in rows if r.get("note") != NOT_IN_TABLE and not (r["voxels_real"] and
                                                                               r["voxels_generated"])]
    parts = [", ".join(names)] + ([f"not compared: {', '.join(absent)} (not in the image dataset's label table)"]
                                  if absent else []) + (
        [f"not compared: {', '.join(empty)} (no test pixel of the class on one side)"] if empty else [])
    if not compared:  # "0 classes outside" would read as a pass
        return {"metric": "classes_outside_real_range", "mean": math.nan, "std": math.nan, "n": 0,
                "note": "not computed: no class has test pixels on both sides; " + "; ".join(p for p in parts if p)}
    return {"metric": "classes_outside_real_range", "mean": len(names), "std": math.nan, "n": compared,
            "note": "; ".join(p for p in parts if p)}
