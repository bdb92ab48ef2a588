"""The model card as Markdown: what MODEL_CARD.md holds and ``medsynth info --card`` prints.

``model_card`` collects the card's facts from the run's files; this module only words them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from medsynth.data.slicing import classes_without_voxels

# The licence is the model_card rule's too: a corrected licence text rewrites the card, not the generator.
LICENCE_PENDING = "added by the model_card rule (results/share/<experiment>/)"
NO_PATIENT_IDS = ("no patient ids given: each case counted as its own patient, so two studies of one patient "
                  "could be in different split parts")
NA_CLASSES = ("NA: its training slices predate the count (and the rule keeping thin slices of a class of their "
              "own): `snakemake -R slice` re-slices them, and retrains")
CROP_ADVICE = ("training saw their body cut at the crop's edge; a larger slice.size or "
               "datasets.{name}.preprocess.spacing_xy takes it in")
UNLEARNT = ("the generator never saw them in training, so what it paints under them in a generated image is not "
            "tissue it learnt: leave them out of what you train on, or add training cases that have them")


def _unlearnt_lines(datasets: Sequence[Mapping], labels: Sequence[Mapping]) -> list[str]:
    """The table's classes in no training slice of the label-map dataset (the first); NA where its slices
    were written before medsynth counted them (no line on a card from before the count)."""
    if not datasets or "class_voxels" not in datasets[0]:
        return []
    counts, head = datasets[0]["class_voxels"], f"- classes in no training slice ({datasets[0]['name']}): "
    absent = [] if counts is None else classes_without_voxels(counts, [e["name"] for e in labels])
    return [head + (NA_CLASSES if counts is None else f"{', '.join(absent)}: {UNLEARNT}" if absent else "none")]


def _spacing_lines(data: Mapping) -> list[str]:
    """The training grid: each dataset's where the card has them (the model_card rule's), else the image
    dataset's (selection's card)."""
    def grid(spacing: Mapping) -> str:
        return (f"{' x '.join(map(str, spacing.get('in_plane_mm', [])))} mm in-plane, slices "
                f"{' to '.join(map(str, sorted(set(spacing.get('slice_mm', [])))))} mm")

    datasets = data["datasets"]
    if len(datasets) < 2:
        return [f"- spacing: {grid(data['spacing'])}"]  # paired: the one dataset's, as selection found it
    if not all("spacing" in d for d in datasets):  # selection's unpaired card: the images' (listed last) only
        return [f"- spacing ({datasets[-1]['name']}): {grid(data['spacing'])}"]
    return [f"- spacing ({d['name']}): {grid(d['spacing'])}" for d in datasets]  # roles: the table above


def _dataset_lines(datasets: Sequence[Mapping]) -> list[str]:
    """Per dataset, how many training cases' body the crop cut and how much of it (none: not a line), and
    whether its patients are cases (no patient ids given)."""
    lines = [f"- patients ({d['name']}): {NO_PATIENT_IDS}" for d in datasets if d.get("patient_ids") is False]
    for d in datasets:
        crop = d.get("body_outside_crop")  # a card of a run before medsynth counted it: no line
        if crop is None:
            continue
        if isinstance(crop["cases"], str):
            lines.append(f"- body outside the training crop ({d['name']}): {crop['cases']}")
        elif crop["cases"]:
            lines.append(f"- body outside the training crop ({d['name']}): {crop['cases']} of {crop['of']} training "
                         f"cases ({100 * crop['share']:.1f} % of all training slices' body voxels): "
                         + CROP_ADVICE.format(name=d["name"]))
        else:
            lines.append(f"- body outside the training crop ({d['name']}): none")
    return lines


def render(card: Mapping) -> str:
    """The card as Markdown: what MODEL_CARD.md holds and ``medsynth info --card`` prints."""
    model, data, train = card["model"], card["training_data"], card["training"]
    licences = card["licence"] or {d["name"]: LICENCE_PENDING for d in data["datasets"]}
    lines = [f"# Model card: medsynth generator `{card['experiment']}`", "",
             f"medsynth {card['medsynth_version']}, card version {card['card_version']}.", "",
             "## Intended use", "", f"**For:** {card['use']['intended']}.", "", f"**Not for:** {card['use']['not_for']}.",
             "", "## Model", "", *_bullets(model), "", "## Training data", "",
             "| dataset | role | source | modality | patients (train / val / test) | training slices | licence |",
             "|---|---|---|---|---|---|---|"]
    for d in data["datasets"]:
        p = d["patients"]
        lines.append(f"| {d['name']} | {d['role']} | {d['source']} | {d['modality']} | "
                     f"{p['train']} / {p['val']} / {p['test']} | {d['train_slices']} | {licences.get(d['name'])} |")
    lines += ["", *_spacing_lines(data),
              f"- intensity mapping: {_inline(data['intensity'])}", *_dataset_lines(data["datasets"]),
              *_unlearnt_lines(data["datasets"], data["labels"]), "",
              "Label table (class id: name ← label values):", "",
              *[f"- {e['id']}: {e['name']} ← {_inline(e['values']) or 'derived (body mask)'}" for e in data["labels"]],
              "", "## Training", "",
              *_bullets({k: v for k, v in train.items() if k not in ("wall_time_s", "init_from")}), ""]
    lines += _source_lines(train.get("init_from"))
    lines += ["## Selection (validation split)", "", *_bullets(card["selection"] or {"selection": "none"}), "",
              "## Test metrics (test split: never seen by training or selection)", ""]
    lines += _metrics_table(card["test_metrics"]) + [""]
    if card.get("shared_audit"):
        lines += ["## Memorisation audit of the shared synthetic cases", "", _audit_scope(model.get("mode")), "",
                  *_bullets(card["shared_audit"]), ""]
    if card.get("utility"):
        lines += ["## Does the synthetic data help? (utility curve, real test split)", "",
                  "The project's segmenter trained on k real training patients, with and without synthetic images "
                  "of label maps they do not cover (docs/how-to/utility-benchmark.md); 95 % bootstrap intervals.", "",
                  *[f"- {line}" for line in card["utility"]], ""]
    lines += ["## Licence of the training data", "",
                                                     *[f"- {n}: {t}" for n, t in licences.items()],
                                                     *_source_licence_lines(train.get("init_from")), ""]
    return "\n".join(lines)


def _audit_scope(mode: str | None) -> str:
    """What the shared volumes were compared with: an unpaired generator never saw an image of a label map, so
    only the nearest training image is a check there."""
    nearest = ("in units of what unseen patients reach (docs/reference/metrics.md, memorisation)")
    if mode == "unpaired":
        return ("Each exported synthetic volume against the nearest training slice of the image dataset, " + nearest
                + ". Unpaired, no volume is compared with a real image of its own label map: the generator never "
                "saw one.")
    return ("Each exported synthetic volume against the real image of its own label map and the nearest training "
            "slice of another patient, " + nearest + ".")


def _source_lines(init_from: Mapping | None) -> list[str]:
    """The source of a fine-tuned generator and, in turn, its own source: file, digest, data, licences."""
    lines = []
    while init_from:
        lines += ["## Initialised from" if not lines else "Its source was initialised from:", "",
                  f"- file: {init_from.get('path')} (SHA-256 {init_from.get('digest')}…)"]
        if "datasets" not in init_from:
            lines += [f"- model card: {init_from.get('card', 'not recorded (a card of an older medsynth)')}", ""]
            break
        lines += [f"- generator `{init_from.get('experiment')}` (medsynth {init_from.get('medsynth_version')}), "
                  "trained on:", "", "| dataset | role | source | modality | licence |", "|---|---|---|---|---|",
                  *[f"| {d['name']} | {d['role']} | {d['source']} | {d['modality']} | "
                    f"{d.get('licence') or LICENCE_PENDING} |" for d in init_from["datasets"]], ""]
        init_from = init_from.get("init_from")
    return lines


def _source_licence_lines(init_from: Mapping | None) -> list[str]:
    lines = []
    while init_from and "datasets" in init_from:
        lines += [f"- {d['name']} (initialised from generator `{init_from.get('experiment')}`): "
                  f"{d.get('licence') or LICENCE_PENDING}" for d in init_from["datasets"]]
        init_from = init_from.get("init_from")
    return lines


def _bullets(fields: Mapping) -> list[str]:
    return [f"- {k.replace('_', ' ')}: {_inline(v)}" for k, v in fields.items()]


def _inline(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, Mapping):
        return "; ".join(f"{k} {_inline(v)}" for k, v in value.items()) if value else "none"
    if isinstance(value, (list, tuple)):
        return ", ".join(_inline(v) for v in value)
    return "none" if value is None else str(value)


def _metrics_table(metrics: Mapping | str) -> list[str]:
    if isinstance(metrics, str):
        return [metrics]
    rows = ["| metric | mean | std | n | note |", "|---|---|---|---|---|"]
    for name, m in metrics.items():
        mean = "NA" if math.isnan(m["mean"]) else f"{m['mean']:.4g}"
        std = "" if math.isnan(m["std"]) else f"{m['std']:.4g}"
        rows.append(f"| {name} | {mean} | {std} | {m['n']} | {m.get('note', '')} |")
    return rows
