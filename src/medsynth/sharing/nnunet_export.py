"""Synthetic (and real) labelled cases as an nnU-Net v2 raw dataset.

``Dataset<NNN>_<Name>/`` holds ``imagesTr/<case>_0000.nii.gz`` and
``labelsTr/<case>.nii.gz`` on each case's source grid with its source affine,
``dataset.json`` (channel names, labels, number of cases, file ending, and
medsynth's provenance in free fields nnU-Net ignores) and ``splits_final.json``,
whose folds keep every case of one source patient together: the K synthetic
variants of a patient and that patient's real scan are all in one fold, so a
fold's validation never sees a patient its training saw.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from tqdm import tqdm

import medsynth
from medsynth.data.cohort import patient_of, read_cases, series_of
from medsynth.data.labels import LabelTable
from medsynth.data.patients import patients_in_test
from medsynth.io.nifti import Volume, load_volume, save_volume
from medsynth.inference.resume import require_generated
from medsynth.io.tables import read_tsv
from medsynth.sharing.copied_maps import (LEFT_OUT_WHY, Rows, case_rows, copies_of_test_maps,
                                         left_out_by_generation, shared_map_patients)
from medsynth.sharing.licences import licence_lines, licence_summary
from medsynth.sharing.nnunet_naming import case_identifiers, export_folders

log = logging.getLogger(__name__)

FILE_ENDING = ".nii.gz"
BACKGROUND = "background"  # nnU-Net's key for class 0


@dataclass(frozen=True)
class ExportCase:
    """One training case of the dataset: an image and its class-id label map on one grid."""

    identifier: str  # nnU-Net's case identifier
    image: Path
    label: Path
    patient: str  # the source patient: folds group by it
    raw_label: LabelTable | None = None  # a real case: its dataset's label values, mapped through this table
    provenance: Mapping[str, object] = field(default_factory=dict)
    series: Mapping[str, str] = field(default_factory=dict)  # DICOM folders: SeriesInstanceUID by file role
    background: float | None = None  # a synthetic case: the value where nothing was generated (manifest)


def nnunet_labels(table: LabelTable) -> dict[str, int]:
    """name -> id of the classes an exported label map can hold, consecutive from background 0.

    The written label maps are the source maps through the label table, so a body
    class the table derived (listed under no label value) never appears in them and
    is left out; it is the table's last class, so the other ids stay consecutive.
    Class 0 is always ``background``, whatever the table calls it (e.g. ``unlabelled``):
    nnU-Net finds the background by that key and refuses a dataset without it.
    """
    keep = [i for i in range(table.num_classes) if not (i == table.body_class and table.body_derived)]
    assert keep == list(range(len(keep))), "a derived body class is always the last"
    clash = [i for i in keep[1:] if table.names[i] == BACKGROUND]
    if clash:
        raise ValueError(f"label table: class {clash[0]} is called {BACKGROUND!r}, the name nnU-Net gives class 0 "
                         f"({table.names[0]!r} here); rename class {clash[0]} in the dataset's labels")
    return {(BACKGROUND if i == 0 else table.names[i]): i for i in keep}


def channel_names(modality: str) -> dict[str, str]:
    """nnU-Net normalises a channel named ``CT`` with the dataset's HU statistics, others per image."""
    return {"0": "CT" if modality == "CT" else modality}


def fold_groups(cases: Sequence[ExportCase], joined: Mapping[str, str] | None) -> dict[str, str]:
    """Each case's patient -> the patient whose fold it goes in: its own, or the one it is ``joined`` to."""
    return {c.patient: (joined or {}).get(c.patient, c.patient) for c in cases}


def patient_folds(cases: Sequence[ExportCase], n_folds: int,
                  joined: Mapping[str, str] | None = None) -> list[dict[str, list[str]]]:
    """Folds over source patients (sorted, dealt round-robin): all cases of a patient in one fold, and of the
    patients ``joined`` to another (``copied_maps.shared_map_patients``: one label map under two ids) in hers."""
    group = fold_groups(cases, joined)
    patients = sorted(set(group.values()))
    if len(patients) < 2:
        raise ValueError(f"export: {len(patients)} source patient(s); cross-validation folds need at least 2")
    k = min(n_folds, len(patients))
    fold_of = {p: i % k for i, p in enumerate(patients)}
    folds = []
    for f in range(k):
        val = sorted(c.identifier for c in cases if fold_of[group[c.patient]] == f)
        train = sorted(c.identifier for c in cases if fold_of[group[c.patient]] != f)
        folds.append({"train": train, "val": val})
    return folds


def _write_case(case: ExportCase, folder: Path, modality: str, labels: Mapping[str, int]) -> None:
    if case.background is not None:  # a synthetic case: its files are generate's
        require_generated(case.image, case.label)
    image = load_volume(case.image, None, case.series.get("image"))
    label = load_volume(case.label, np.integer, case.series.get("label"))
    if case.raw_label is not None:  # a real case: its label values through its table, onto its image's grid
        from medsynth.inference.generate_cases import label_on_source_grid  # here: config checks import this module, torch-free
        classes = label_on_source_grid(label, case.raw_label, image.array.shape, image.affine)
        label = Volume(classes, image.affine, label.path)
    if image.array.shape != label.array.shape or not np.allclose(image.affine, label.affine, atol=1e-3):
        raise ValueError(f"{case.label}: label map is not on the grid of its image {case.image} "
                         f"(shapes {label.array.shape} vs {image.array.shape}); nnU-Net needs both on one grid")
    top = max(labels.values())
    if label.array.min() < 0 or label.array.max() > top:
        raise ValueError(f"{case.label}: holds class ids outside 0..{top} of the label table")
    if case.background is not None:
        check_tissue(case, image.array, label.array)
    data = image.array
    if modality == "CT":  # HU, as the source CT stores them
        data = np.clip(np.rint(data), -32768, 32767).astype(np.int16)
    else:
        data = data.astype(np.float32)
    files = (folder / "imagesTr" / f"{case.identifier}_0000{FILE_ENDING}",
             folder / "labelsTr" / f"{case.identifier}{FILE_ENDING}")
    # A generated volume and label map already stored as written here (generate's own files): checked above,
    # then linked, not compressed again (2.3 s of the login node's time per AutoPET-sized volume, and a
    # second copy of the synthetic set on disk).
    if case.background is not None and stored_as(case.image, data.dtype) and stored_as(case.label, np.uint8):
        for source, target in zip((case.image, case.label), files):
            link_or_copy(source, target)
        return
    save_volume(files[0], data, image.affine)
    save_volume(files[1], label.array.astype(np.uint8), image.affine)


def stored_as(path: Path, dtype: np.dtype) -> bool:
    """Whether a gzipped NIfTI stores its voxels as ``dtype`` without scaling (its header alone is read)."""
    import nibabel as nib

    if not str(path).endswith(FILE_ENDING):
        return False
    header = nib.load(path).header
    slope, inter = header.get_slope_inter()
    return header.get_data_dtype() == np.dtype(dtype) and slope in (None, 1.0) and inter in (None, 0.0)


def link_or_copy(source: Path, target: Path) -> None:
    """A hard link (no second copy on disk; generate replaces its files rather than writing into them),
    or a copy where the file system has none (another device)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        target.hardlink_to(source)
    except OSError:
        shutil.copyfile(source, target)


# At most this share of a synthetic case's labelled voxels may hold the background value (edge voxels
# that the source grid's finer labels put just outside the training grid's body): a segmentation model
# trained on more would learn that an organ can be air.
MAX_TISSUE_AT_BACKGROUND = 0.01


def check_tissue(case: ExportCase, image: np.ndarray, label: np.ndarray) -> None:
    """Refuse a synthetic case whose labelled voxels lack generated tissue (hold the background value)."""
    # Here, not at the top: the config checks import this module at every Snakemake start, and
    # data.checks brings scipy.ndimage (a fifth of a second).
    from medsynth.data.checks import tissue_at_background

    share = tissue_at_background(image, label, float(case.background))
    if share > MAX_TISSUE_AT_BACKGROUND:
        raise ValueError(f"{case.image}: {share:.1%} of the labelled voxels of {case.identifier} hold the "
                         f"background value {case.background:g} (no generated tissue; at most "
                         f"{MAX_TISSUE_AT_BACKGROUND:.0%} allowed): generate it again with this version "
                         "(snakemake -R generate)")


def fewer_folds_note(written: int, asked: int) -> str | None:
    """Fewer source patients than ``export.folds``: say so, or nnU-Net's fold ``written`` and above would
    fall back to its own random split by case, validating on variants of training patients."""
    if written >= asked:
        return None
    return (f"{written} source patients: splits_final.json holds {written} folds, not export.folds={asked}; "
            f"train folds 0-{written - 1} only (nnU-Net's fold {written} and above would split by case at random, "
            "validating on variants of training patients)")


ONE_PATIENT = ("every case comes from one source patient: no cross-validation fold by patient exists, so no "
               "splits_final.json (nnU-Net's own random split would validate on variants of the training "
               "patient); train on all of it (nnUNetv2_train ... all) and validate elsewhere")


def write_dataset(folder: Path, cases: Sequence[ExportCase], table: LabelTable, modality: str,
                  provenance: Mapping[str, object], n_folds: int = 5, joined: Mapping[str, str] | None = None) -> Path:
    """Write the dataset into ``folder`` (replacing it); built beside it, then renamed into place. ``joined``:
    patients whose folds are another's (``patient_folds``)."""
    if not cases:
        raise ValueError(f"{folder}: no cases to export; check export.splits and generate.splits")
    ids = [c.identifier for c in cases]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{folder}: case identifiers repeat: {sorted({i for i in ids if ids.count(i) > 1})}")
    folder = Path(folder)
    # One source patient (a 1/1/1 split, or the audit refusing every other patient's volumes): no fold by
    # patient exists; nnU-Net's own random split would validate on variants of the training patient.
    one_patient = len(set(fold_groups(cases, joined).values())) < 2
    folds = None if one_patient else patient_folds(cases, n_folds, joined)
    note = ONE_PATIENT if one_patient else fewer_folds_note(len(folds), n_folds)
    if note:
        provenance = {**provenance, "splits_note": note}
        log.warning("%s: %s", folder.name, note)
    # Hidden and not named Dataset<id>_: nnU-Net finds a dataset by that prefix, and a half-written folder left by
    # a killed job would be a second match (or, alone, be taken for the dataset).
    tmp = folder.with_name(f".{folder.name}.part")
    shutil.rmtree(tmp, ignore_errors=True)
    labels = nnunet_labels(table)
    for case in tqdm(sorted(cases, key=lambda c: c.identifier), desc="export", unit="case"):
        _write_case(case, tmp, modality, labels)
    meta = {
        "channel_names": channel_names(modality),
        "labels": labels,
        "numTraining": len(cases),
        "file_ending": FILE_ENDING,
        "name": folder.name.split("_", 1)[1],
        "description": "synthetic images from label maps (medsynth); research use, not for diagnosis",
        **({"licence": licence_summary(provenance["licences"])} if "licences" in provenance else {}),
        "medsynth": {**provenance, "cases": {c.identifier: {"patient": c.patient, **c.provenance}
                                             for c in sorted(cases, key=lambda c: c.identifier)}},
    }
    if folds is not None:  # before dataset.json, the last file: without it nnU-Net would split at random
        (tmp / "splits_final.json").write_text(json.dumps(folds, indent=1) + "\n")
    (tmp / "dataset.json").write_text(json.dumps(meta, indent=1, default=str) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.replace(folder)
    return folder


def synthetic_cases(manifest: Sequence[Mapping[str, str]], parts: Sequence[str]) -> list[ExportCase]:
    """The generated volumes of the given split parts and of the generate_from datasets (``generate``'s
    manifest rows); the identifier is the case's folder name made plain, one per case
    (``nnunet_naming.case_identifiers``, over every row: the names do not change with the parts exported)."""
    stems = case_identifiers(row["case_id"] for row in manifest)
    out = []
    for row in manifest:
        if row["part"] not in parts and row["part"] != "generate_from":
            continue
        out.append(ExportCase(
            identifier=f"{stems[row['case_id']]}_syn{int(row['sample']):02d}", image=Path(row["volume"]),
            label=Path(row["label"]),
            background=_background(row),
            # One patient id is one patient across datasets: grouping too much costs nothing, too little leaks.
            patient=row["patient_id"],
            provenance={"synthetic": True, **{k: row[k] for k in PROVENANCE_COLUMNS if k in row}}))
    return out


def _background(row: Mapping[str, str]) -> float:
    """A manifest row's background value; a manifest without one comes from a version that generated only
    the crops training saw, which cannot be shipped."""
    if not row.get("background"):
        raise ValueError(f"{row['volume']}: the manifest has no background column (written by a medsynth that "
                         "generated only the slices and crops training saw); generate again (snakemake -R generate)")
    return float(row["background"])


def real_cases(rows: Sequence[Mapping[str, str]], parts: Mapping[str, str], wanted: Sequence[str],
               table: LabelTable) -> list[ExportCase]:
    """The real cases of the given split parts, from a dataset's ``cases.tsv`` rows (absolute paths);
    ``table`` is that dataset's label table (class ids by the same names as the synthetic cases'). A
    label-only case (empty image) has no real image: only its synthetic volumes are shipped."""
    return [ExportCase(identifier=f"{r['case_id']}_real", image=Path(r["image"]), label=Path(r["label"]),
                       patient=patient_of(r), raw_label=table,
                       provenance={"synthetic": False, "case_id": r["case_id"]}, series=series_of(r))
            for r in rows if parts.get(r["case_id"]) in wanted and r.get("image")]


def leaked_cases(cases: Sequence[ExportCase], split_tables: Mapping[str, Path]) -> list[str]:
    """The cases whose patient is in the test part of one of the datasets (dataset -> ``split.tsv``)."""
    test = patients_in_test(split_tables)
    return [f"case {c.identifier} (patient {c.patient}, in the test part of {test[c.patient]}: "
            f"{split_tables[test[c.patient]]})" for c in sorted(cases, key=lambda c: c.identifier) if c.patient in test]


def refuse_test_cases(experiment: str, cases: Sequence[ExportCase], split_tables: Mapping[str, Path],
                      rows: Rows) -> None:
    """Raise, before anything is written, for a case of a test patient, or one made from a test case's
    label map under another id (``rows``: ``copied_maps.case_rows`` of the cases tables)."""
    def shown(items: list[str]) -> str:
        return "; ".join(items[:10]) + (f"; … ({len(items)} in all)" if len(items) > 10 else "")

    leaks = leaked_cases(cases, split_tables)
    if leaks:
        raise ValueError(f"export of experiments.{experiment}: {len(leaks)} case(s) of test patients, which must "
                         f"stay out of anything shared: {shown(leaks)}. Remove test from export.splits, or those "
                         "patients' cases from the dataset they come from (a generate_from dataset, or with "
                         "export.include_real the image dataset)")
    copies = copies_of_test_maps(cases, rows, split_tables)
    if copies:
        raise ValueError(f"export of experiments.{experiment}: {len(copies)} case(s) made from a test case's label "
                         f"map under another id: {shown(copies)}. Remove the copies from the dataset that lists "
                         "them, or give them the test case's patient_id (then they are held out with it)")


def export_experiment(experiment: str, manifest: Path, real: tuple[Path, Path, LabelTable] | None,
                      out_root: Path, settings: Mapping, naming: Mapping, labels: Sequence[Mapping],
                      modality: str, split_tables: Mapping[str, Path], audit: Path | None = None,
                      case_tables: Mapping[str, Path] | None = None,
                      licences: Mapping[str, str | None] | None = None) -> Path:
    """The workflow's export: ``out_root/Dataset<NNN>_<Name>`` from generate's manifest.

    ``real``: (cases.tsv, split.tsv, label table) of the image dataset, whose real
    cases of the exported parts join the synthetic ones (``export.include_real``).
    ``split_tables``: dataset -> ``split.tsv`` of the datasets the experiment trains, validates and
    tests on; a case of one of their test patients is refused before anything is written (the config
    check sees only the datasets whose cases are known when the workflow loads).
    ``case_tables``: dataset -> ``cases.tsv`` of those datasets and the generate_from ones: a case whose
    source label map is a copy of a test case's, under whatever id, is refused too (``copied_maps``).
    ``audit``: the memorisation audit of the synthetic volumes (``audit.audit_shared``'s table):
    copied into the dataset, summarised in dataset.json, the volumes it flagged or could not audit left
    out unless ``export.refuse_flagged`` is false. ``licences``: dataset -> licence of every dataset behind
    the volumes (the generator's, its sources', the generate_from ones), into dataset.json.
    """
    folder = Path(out_root) / export_folders(naming)[experiment]
    parts = list(settings["splits"])
    cases = synthetic_cases(read_tsv(manifest), parts)
    audit_rows = read_tsv(audit) if audit is not None else None
    if audit_rows is not None:
        cases, audit_summary = apply_audit(cases, audit_rows, bool(settings.get("refuse_flagged", True)))
        if not cases and audit_summary["refused"]:
            raise ValueError(f"{audit}: the memorisation audit cleared no synthetic volume of {experiment} "
                             f"({len(audit_summary['flagged'])} flagged as possible copies, "
                             f"{len(audit_summary['not_audited'])} not audited: its note column says why); look "
                             "at the table, or set export.refuse_flagged: false to ship them marked as they are")
    if real is not None:
        real_parts = {r["case_id"]: r["part"] for r in read_tsv(real[1])}
        cases += real_cases(read_cases(real[0]), real_parts, parts, real[2])
    rows = case_rows(case_tables or {})  # each cases table read once for the three checks
    refuse_test_cases(experiment, cases, split_tables, rows)
    provenance = {"experiment": experiment, "parts": parts, "include_real": real is not None,
                  "medsynth_version": medsynth.__version__, **({} if licences is None else
                                                                {"licences": licence_lines(dict(sorted(licences.items())))})}
    if settings.get("include_real") and real is None:  # the workflow gives none for an image-only dataset
        provenance["include_real_note"] = ("export.include_real is set, but the image dataset has no label maps "
                                           "(image-only): only synthetic cases are shipped")
        log.warning("%s: %s", experiment, provenance["include_real_note"])
    if audit_rows is not None:
        provenance["memorisation_audit"] = audit_summary
    left_out = left_out_by_generation(rows, split_tables)
    if left_out:  # generate's warnings, counted where the dataset is shared: their names are test patients'
        provenance["left_out_by_generation"] = {"cases": len(left_out), "why": LEFT_OUT_WHY}
    joined = shared_map_patients(cases, rows)
    if joined:
        provenance["same_label_map"] = joined
        log.warning("%s: patients with byte-identical source label maps share a fold: %s", experiment, joined)
    if Path(out_root).exists():
        shutil.rmtree(out_root)  # the folder is the rule's output: nothing of an older export stays
    written = write_dataset(folder, cases, LabelTable.from_config(labels), modality, provenance,
                            int(settings.get("folds", 5)), joined)
    if audit is not None:  # beside dataset.json: nnU-Net reads only what it knows
        shutil.copyfile(audit, written / AUDIT_FILE)
    log.info("%s: %d cases (%d synthetic) of %d patients", written, len(cases),
             sum(bool(c.provenance.get("synthetic")) for c in cases), len({c.patient for c in cases}))
    return written


AUDIT_FILE = "memorisation_audit.tsv"


def apply_audit(cases: Sequence[ExportCase], rows: Sequence[Mapping[str, str]],
                refuse: bool) -> tuple[list[ExportCase], dict]:
    """The synthetic cases with their audit in their provenance; when ``refuse``, only those the audit
    cleared: the flagged ones and those it could not audit (``flagged`` NA, its note says why) are left
    out. The audit's summary for dataset.json. Every synthetic case must have a row in the audit."""
    by_key = {(r["case_id"], int(r["sample"])): r for r in rows}
    kept, flagged, unaudited, refused = [], [], [], []
    for case in cases:
        key = (case.provenance.get("case_id"), int(case.provenance.get("sample", -1)))
        row = by_key.get(key)
        if row is None:
            raise ValueError(f"{case.image}: synthetic case {case.identifier} has no row in the memorisation audit; "
                             "run it again (snakemake -R audit_shared)")
        marks = {k: row.get(k, "") for k in ("own_ratio_min", "nearest_ratio_min", "audited_share", "flagged")}
        if row["flagged"] != "False":
            copy = row["flagged"] == "True"
            (flagged if copy else unaudited).append(case.identifier)
            if refuse:
                refused.append(case.identifier)
                log.warning("%s: left out, %s (own-image ratio %s, nearest-training ratio %s; %s)", case.identifier,
                            "flagged by the memorisation audit" if copy else "not audited",
                            row["own_ratio_min"], row["nearest_ratio_min"], row.get("note") or "no note")
                continue
        kept.append(replace(case, provenance={**case.provenance, "memorisation": marks}))
    return kept, {"audited": len(cases) - len(unaudited), "flagged": flagged, "not_audited": unaudited,
                  "refused": refused, "file": AUDIT_FILE}


# Provenance columns of generate's manifest carried into dataset.json per case.
PROVENANCE_COLUMNS = ("case_id", "dataset", "source_case", "part", "sample", "seed", "generator_step", "selected_by",
                      "medsynth_version")
