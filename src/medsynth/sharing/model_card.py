"""The model card: what a generator was trained on, how, how it scored, and what it is for.

Selection writes it into ``generator.pt`` (``card``) with every field known then; the
test metrics exist only after evaluation, which needs that generator, so the
``model_card`` rule adds them afterwards and writes ``MODEL_CARD.md`` beside the
generator and a shareable copy of both (``results/share/<experiment>/``).
Every value comes from a file of the run (split table, slices, preprocessing meta,
``jobs.tsv``, ``selected.json``, ``test_metrics.tsv``) or the config; nothing is estimated.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path

import numpy as np

from medsynth.data.labels import LabelTable
from medsynth.data.slicing import crop_cut_of, summed_class_voxels
from medsynth.data.split import cases_as_patients
from medsynth.io.tables import parse_float, read_tsv
from medsynth.sharing.card_text import LICENCE_PENDING, render
from medsynth.sharing.copied_maps import LEFT_OUT_WHY
from medsynth.sharing.licences import licence_lines

CARD_VERSION = 1
INTENDED_USE = ("research: synthetic training images for segmentation models, data augmentation studies, and "
                "method development on label maps like those it was trained on")
NOT_FOR = ("diagnosis, treatment planning or any clinical decision; images of anatomy, pathology, scanners or "
           "protocols unlike the training data; claims about a patient (the images are made up from label maps)")
NOT_STATED = "not stated in the config (datasets.{name}.licence): ask the data's owner before sharing this model"
PENDING = "not yet evaluated (the model_card rule adds them after the evaluate stage)"
# A fine-tuned generator's source: what it learnt came from the source's data too, under their licences.
SOURCE_WITHOUT_CARD = ("none: {path} holds no model card (a run's latest.pt or an EMA snapshot): the data it was "
                       "trained on and their licences are not known here; state them before sharing this model, or "
                       "fine-tune from an exported generator.pt (results/share/<experiment>/generator.pt)")
SOURCE_NOT_STATED = ("not stated in the source generator's card: ask the owner of the source generator's data "
                     "before sharing this model")
# Not "rerun slice": new slices retrain the generator; the next run's slicing counts it.
NA_CROP = ("NA: the slices of {n} training case(s) were written before medsynth counted the body outside the "
           "crop")
# Sections in their order on the card; the keys a complete card holds.
SECTIONS = ("model", "training_data", "training", "selection", "test_metrics", "use", "licence")
START_EVENTS, END_EVENTS = ("started", "resumed"), ("stopped", "finished")


def dataset_entry(name: str, role: str, dataset: Mapping, split_tsv: Path, train_slices: Sequence[Path]) -> dict:
    """One dataset: where it came from, its patients per split part and the slices of its training cases."""
    rows = read_tsv(split_tsv)
    patients = {part: len({r["patient_id"] for r in rows if r["part"] == part}) for part in ("train", "val", "test")}
    return {"name": name, "role": role, "source": dataset["source"], "modality": dataset["modality"],
            "patients": patients,
            "patient_ids": cases_as_patients(rows, str(split_tsv)) is None,  # False: each case its own patient
            "cases": {part: sum(r["part"] == part for r in rows) for part in ("train", "val", "test")},
            **training_slices(train_slices)}


def training_slices(slice_files: Sequence[Path]) -> dict:
    """The training cases' slices (their ``slices.npz``'s ``z``, not the images), how much of their body the
    crop left out (``body_outside_crop``: cases cut, of cases, share of all their body voxels; NA with the
    reason for slices from before that count) and each class's voxels (``class_voxels``; None likewise)."""
    slices, cut, outside, body, unknown = 0, 0, 0, 0, 0
    voxels = summed_class_voxels(slice_files)
    for path in slice_files:
        with np.load(path) as npz:
            slices += int(npz["z"].shape[0])
            counts = crop_cut_of(npz)
        if counts is None:
            unknown += 1
            continue
        cut, outside, body = cut + (counts[0] > 0), outside + counts[0], body + counts[1]
    crop = ({"cases": cut, "of": len(slice_files), "share": round(outside / body, 4) if body else 0.0} if not unknown
            else {"cases": NA_CROP.format(n=unknown)})
    return {"train_slices": slices, "body_outside_crop": crop,
            "class_voxels": None if voxels is None else [int(v) for v in np.trim_zeros(voxels, "b")]}


def spacing_of(meta_files: Sequence[Path]) -> dict:
    """The training grid in mm: in-plane spacing and the range of slice thicknesses over the cases."""
    spacings = np.array([json.loads(Path(p).read_text())["spacing"] for p in meta_files], dtype=float)
    if spacings.size == 0:
        return {}
    return {"in_plane_mm": [round(float(v), 3) for v in spacings[:, :2].mean(axis=0)],
            "slice_mm": [round(float(spacings[:, 2].min()), 3), round(float(spacings[:, 2].max()), 3)]}


def spacing_by_dataset(meta_files: Sequence[Path]) -> dict[str, dict]:
    """``spacing_of`` per dataset, from preprocessing metas laid out as ``<dataset>/<case>/meta.json``."""
    groups: dict[str, list[Path]] = {}
    for path in map(Path, meta_files):
        groups.setdefault(path.parent.parent.name, []).append(path)
    return {name: spacing_of(files) for name, files in groups.items()}


def intensity_settings(modality: str, preprocess: Mapping) -> dict:
    """How intensities were mapped to the networks' [-1, 1]: the CT window (HU) or MR percentiles."""
    keys = ("ct_window", "ct_soft_window", "ct_soft_share") if modality == "CT" else ("mr_percentiles",)
    return {k: preprocess[k] for k in keys if k in preprocess}


def training_data(datasets: Sequence[dict], modality: str, spacing: dict, table: LabelTable,
                  intensity: dict) -> dict:
    """``table``: the generator's classes (the config's table, plus the body class it derives when the
    table has none, listed with no label values)."""
    return {"datasets": list(datasets), "modality": modality, "spacing": spacing,
            "labels": [{"id": i, "name": n, "values": list(v)} for i, (n, v) in enumerate(zip(table.names, table.values))],
            "intensity": intensity}


def job_times(jobs_tsv: Path) -> dict:
    """Wall time and hardware of a training's chain of jobs (``jobs.tsv``).

    A job's time runs from its start (or resume) to its stop or finish; a job that
    crashed wrote no end, so its time is not counted and the card says how many did.
    """
    rows = read_tsv(jobs_tsv) if Path(jobs_tsv).is_file() else []
    seconds, uncounted, hardware, start = 0.0, 0, [], None
    for row in rows:
        if row["event"] in START_EVENTS:
            uncounted += start is not None
            start = datetime.fromisoformat(row["time"])
            if row.get("detail") and row["detail"] not in hardware:
                hardware.append(row["detail"])
        elif row["event"] in END_EVENTS and start is not None:
            seconds += (datetime.fromisoformat(row["time"]) - start).total_seconds()
            start = None
    return {"wall_time_s": seconds, "wall_time": _duration(seconds), "jobs": sum(r["event"] in START_EVENTS for r in rows),
            "jobs_without_end": uncounted + (start is not None), "hardware": hardware or ["not recorded"]}


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{seconds / 60:.1f} min"


def training(settings: Mapping, jobs: dict, init_from: Mapping | None) -> dict:
    keys = ("steps", "batch_size", "lr_g", "lr_d", "seed", "precision")  # mode, preset, context: under model
    return {**{k: settings[k] for k in keys if k in settings}, **jobs,
            "init_from": dict(init_from) if init_from else None}


def source_record(path: str | Path) -> dict:
    """What a fine-tuned generator's source file says of its own training data: from the model card it
    holds (an exported ``generator.pt``), the source experiment and each dataset with its role and
    licence (None where the card has none yet: selection's own card), and the source's own source in
    turn; a file without a card (``latest.pt``, a snapshot) says so."""
    from medsynth.io.checkpoint import load_checkpoint  # only a fine-tuned run's card needs torch

    card = load_checkpoint(Path(path)).get("card")
    if not card:
        return {"card": SOURCE_WITHOUT_CARD.format(path=path)}
    licences = card.get("licence") or {}
    datasets = [{"name": d["name"], "role": d.get("role"), "source": d.get("source"), "modality": d.get("modality"),
                 "licence": licences.get(d["name"])} for d in card["training_data"]["datasets"]]
    return {"experiment": card.get("experiment"), "medsynth_version": card.get("medsynth_version"),
            "datasets": datasets, "init_from": (card.get("training") or {}).get("init_from")}


def with_source_licences(init_from: Mapping | None, licences: Mapping[str, str | None]) -> dict | None:
    """``init_from`` with every source dataset's licence stated, down the chain of sources: the source
    card's, else ``licences`` (the workflow's config, for other experiments' generators), else said to
    be unknown."""
    if not init_from or "datasets" not in init_from:
        return dict(init_from) if init_from else None
    datasets = [{**d, "licence": d.get("licence") or licences.get(d["name"]) or SOURCE_NOT_STATED}
                for d in init_from["datasets"]]
    return {**init_from, "datasets": datasets, "init_from": with_source_licences(init_from.get("init_from"), licences)}


def build_card(experiment: str, model: Mapping, data: dict, train: dict, version: str) -> dict:
    """Everything but the selection (``select_checkpoint`` adds it) and the test metrics."""
    return {"card_version": CARD_VERSION, "experiment": experiment, "medsynth_version": version,
            "model": dict(model), "training_data": data, "training": train, "selection": None,
            "test_metrics": PENDING, "use": {"intended": INTENDED_USE, "not_for": NOT_FOR},
            "licence": None}


def card_before_selection(experiment: str, datasets: Sequence[dict], labels: Sequence[Mapping], modality: str,
                          preprocess: Mapping, meta_files: Sequence[Path], settings: Mapping, slice_size: int,
                          jobs_tsv: Path, version: str) -> dict:
    """The card from the run's files and the config, as selection completes it.

    ``datasets``: ``dataset_entry`` of each dataset the generator learnt from; ``meta_files``: the
    preprocessing meta of the image dataset's training cases; ``settings``: the experiment's train settings.
    """
    init_from = None
    if settings.get("init_from"):
        from medsynth.train.init_from import file_digest

        init_from = {"path": settings["init_from"], "digest": file_digest(settings["init_from"]),
                     **source_record(settings["init_from"])}
    model = {"preset": settings.get("model"), "mode": settings.get("mode"), "slice_size": slice_size,
             "context_slices": settings.get("context_slices", 0)}
    data = training_data(datasets, modality, spacing_of(meta_files), LabelTable.from_config(labels),
                         intensity_settings(modality, preprocess))
    return build_card(experiment, model, data, training(settings, job_times(jobs_tsv), init_from), version)


def test_metrics(test_metrics_tsv: Path) -> dict:
    """``test_metrics.tsv`` as {metric: {mean, std, n}}; metrics that could not be computed keep their note."""
    out = {}
    for row in read_tsv(test_metrics_tsv):
        n = parse_float(row["n"])  # NA: a metric no slice could be scored for
        entry = {"mean": parse_float(row["mean"]), "std": parse_float(row["std"]), "n": "NA" if math.isnan(n) else int(n)}
        if row.get("note"):
            entry["note"] = row["note"]
        out[row["metric"]] = entry
    return out


def missing_fields(card: Mapping) -> list[str]:
    """The sections a complete card lacks (empty when none)."""
    return [s for s in SECTIONS if card.get(s) in (None, "", PENDING, LICENCE_PENDING, {})]


def shared_audit(table: Path | None, refuse: bool, left_out: Mapping[str, str] | None = None) -> dict:
    """The memorisation audit of the exported synthetic volumes (``audit.audit_shared``'s table) as the card
    states it; without an export nothing is shared. ``left_out``: with generate_from datasets, the cases
    generation left out and why (``copied_maps.left_out_by_generation``): the card counts them, naming none
    (they are test patients')."""
    if table is None:
        return {"exported": "nothing (no export.splits part and no generate_from dataset)"}
    rows = read_tsv(table)
    flagged = [f"{r['case_id']} sample {r['sample']}" for r in rows if r["flagged"] == "True"]
    unaudited = [f"{r['case_id']} sample {r['sample']}" for r in rows if r["flagged"] not in ("True", "False")]
    shares = sorted(v for v in (parse_float(r.get("audited_share", "")) for r in rows) if not math.isnan(v))
    covered = (f"median {100 * float(np.median(shares)):.0f} %, smallest {100 * shares[0]:.0f} % (the crops of the "
               "slices training kept; the rest of each volume is not audited)") if shares else "NA"
    return {"volumes audited": len(rows) - len(unaudited), "labelled voxels of a volume audited": covered,
            "flagged as possible copies": len(flagged),
            "flagged volumes": ", ".join(flagged) if flagged else "none",
            "volumes no check could compare (not audited)": ", ".join(unaudited) if unaudited else "none",
            "flagged or not audited volumes in the export": "left out (export.refuse_flagged)" if refuse else
            "shipped, marked as they are (export.refuse_flagged: false)",
            **({} if left_out is None else {LEFT_OUT: f"{len(left_out)} ({LEFT_OUT_WHY})" if left_out else "none"}),
            "table": f"{Path(table).name} in the export folder"}


# The card's line for the generate_from cases generation left out (inference/held_out.py), counted.
LEFT_OUT = "label maps left out of generation (a test patient's study)"


def write_cards(generator: Path, test_metrics_tsv: Path, licences: Mapping[str, str | None], card_md: Path,
                share_dir: Path, source_licences: Mapping[str, str | None] | None = None,
                audit: Mapping | None = None, utility: Sequence[str] | None = None,
                spacing: Mapping[str, dict] | None = None) -> dict:
    """The complete card (with the test metrics and ``licences``, each dataset's as the config states
    it): ``card_md`` beside the generator, and in ``share_dir`` the generator holding that card and the
    same MODEL_CARD.md, the two files to give a colleague. ``source_licences``: a fine-tuned generator's
    source datasets' licences where its card holds none (another experiment's selection-stage card);
    ``audit``: ``shared_audit`` of the exported synthetic cases; ``utility``: the utility curve in sentences
    (``utility_curve.findings``), or why it was not run; ``spacing``: each dataset's training grid
    (``spacing_by_dataset``; selection's card has the image dataset's only, which for an unpaired generator is
    not the grid of the label maps it draws on)."""
    from medsynth.io.checkpoint import load_checkpoint, save_checkpoint  # only this step needs torch

    state = load_checkpoint(Path(generator))
    if not state.get("card"):
        raise ValueError(f"{generator}: holds no model card (exported by an older medsynth): run the select "
                         "stage again (snakemake --forcerun select)")
    names = [d["name"] for d in state["card"]["training_data"]["datasets"]]
    card = {**state["card"], "test_metrics": test_metrics(test_metrics_tsv),
            "licence": licence_lines({n: licences.get(n) for n in names}, NOT_STATED)}
    if spacing:
        card["training_data"] = {**card["training_data"], "datasets": [
            {**d, "spacing": spacing[d["name"]]} if d["name"] in spacing else d for d in card["training_data"]["datasets"]]}
    if audit is not None:
        card["shared_audit"] = dict(audit)
    if utility:
        card["utility"] = list(utility)
    train = card.get("training") or {}
    if train.get("init_from"):
        card["training"] = {**train, "init_from": with_source_licences(train["init_from"], source_licences or {})}
    text = render(card)
    share_dir = Path(share_dir)
    share_dir.mkdir(parents=True, exist_ok=True)
    for path in (Path(card_md), share_dir / "MODEL_CARD.md"):
        path.write_text(text)
    save_checkpoint(share_dir / "generator.pt", {**state, "card": card})
    return card
