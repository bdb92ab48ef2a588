# Helpers shared by the stage files: the config loaded through medsynth.config, case lists, input
# functions, resources. Each rule gets only the slice of the config it uses (medsynth/config/keys.py),
# so changing one setting reruns only the stages that depend on it (Snakemake's params rerun trigger).

import csv
import importlib.util
import os
import sys
from types import SimpleNamespace

from snakemake.utils import validate

# medsynth's config modules need only PyYAML and Snakemake: where Snakemake runs without medsynth
# installed (e.g. with --use-conda), they are read from the checkout.
MEDSYNTH_INSTALLED = importlib.util.find_spec("medsynth") is not None
if not MEDSYNTH_INSTALLED:
    sys.path.insert(0, os.path.join(workflow.basedir, "..", "src"))

from medsynth.config.keys import (
    CARD_TRAIN_KEYS,
    PERCEPTUAL_KEYS,
    SEGMENTER_KEYS,
    canonical,
    only,
)
from medsynth.config import keys as _keys
from medsynth.config.load import config_problems, inline_label_files, normalise
from medsynth.inference.generator_contract import card_inputs, generator_data


SCHEMA = workflow.source_path("../schemas/config.schema.yaml")

# Label tables in their own files (e.g. config/labels/totalsegmentator_v2_grouped.yaml) are read into
# the config, which is then validated like an inline one (one validation: it is a tenth of a second of
# every Snakemake start).
_LABEL_FILES = inline_label_files(config)
validate(config, SCHEMA)
normalise(config)
# What only medsynth can tell (a label value listed twice, a slice size a preset cannot take) would
# otherwise fail every case's preprocessing, or training after all of it. Without medsynth installed
# where Snakemake runs, the jobs make the same checks. The working directory: where a url dataset's
# cases.tsv lies once downloaded (its test patients).
_errors = config_problems(config, _LABEL_FILES, os.getcwd(), medsynth_checks=MEDSYNTH_INSTALLED)
if _errors:
    raise ValueError("\n".join(_errors))


def image_only(dataset):
    return _keys.image_only(config, dataset)


def labels_of(dataset):
    return _keys.labels_of(config, dataset)


def slice_settings(dataset):
    return _keys.slice_settings(config, dataset)


def download_source(dataset):
    return _keys.download_source(config, dataset)


def preprocess_settings(dataset):
    return _keys.preprocess_settings(config, dataset)


def train_settings(wildcards):
    return _keys.train_settings(config, wildcards.experiment)


ENV = "../envs/medsynth.yaml"
DATASETS = sorted(config["datasets"])
EXPERIMENTS = sorted(config["experiments"])


wildcard_constraints:
    dataset="|".join(DATASETS),
    experiment="|".join(EXPERIMENTS),
    case=r"[A-Za-z0-9_.\-]+",


def read_table(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


_CASES = {}


def cases_of(dataset):
    """Case rows of a dataset, known once its download checkpoint has run."""
    path = checkpoints.download.get(dataset=dataset).output.cases
    key = (path, os.stat(path).st_mtime_ns)  # read once per version: every case's inputs ask
    if key not in _CASES:
        rows = {}
        for row in read_table(path):
            for col in ("image", "label", "mask"):
                # Paths in a cases table are relative to the table's folder; mask is optional.
                if row.get(col):
                    row[col] = os.path.normpath(os.path.join(os.path.dirname(path), row[col]))
            rows[row["case_id"]] = row
        _CASES[key] = rows
    return _CASES[key]


def split_of(dataset, parts):
    """Sorted case ids in the given split parts (after the split checkpoint)."""
    path = checkpoints.split.get(dataset=dataset).output.split
    return sorted(row["case_id"] for row in read_table(path) if row["part"] in parts)


def experiment_dataset(wildcards):
    """The dataset of an experiment's label maps."""
    return config["experiments"][wildcards.experiment]["dataset"]


def grows(base, cap=4):
    """A resource (MB, minutes) that grows with each retry, up to ``cap`` times: a job killed
    for memory or time on a cluster gets more when Snakemake resubmits it."""
    return lambda wildcards, attempt: base * min(attempt, cap)


# MB a heavy stage adds to its process at slice.size 256 (bench/scale.py's memory part: CPU, the demo's
# batch settings, Inception and AlexNet for evaluate and real_stats; docs/benchmarks.md "A thousand patients"), and
# the imports' MB. Flat in the number of test cases (tests/test_memory.py); a slice size s scales them by
# max(s/256, (s/256)^2), an upper bound of what was measured at 64, 128 and 256 px.
STAGE_MB_AT_256 = {"evaluate": 1400, "audit_shared": 400, "utility": 2250, "segmenter": 1250, "real_stats": 850}
IMPORTS_MB = 600


def stage_mem_mb(stage, held=None, before=16000):
    """``mem_mb`` of a heavy rule: twice its measured working memory (allocator noise, anatomy busier than
    the bench's) plus the training slices it holds by design, ``held(input)`` -> bytes per pixel times
    slices, counted from the files' headers (``before`` MB while they do not exist yet: a dry run;
    Snakemake computes resources again once a job's input is there). More on each retry (up to 4x)."""
    size = config["slice"]["size"]
    r = size / 256
    working = 2 * (IMPORTS_MB + STAGE_MB_AT_256[stage] * max(r, r * r))

    def mem_mb(wildcards, input, attempt):
        pixels = held(input) if held is not None else 0
        extra = before if pixels is None else pixels * size * size / 1e6
        return int((working + extra) * min(attempt, 4))

    return mem_mb


def held_bytes(*parts):
    """``held`` for ``stage_mem_mb``: (input name, bytes per pixel of each slice) pairs."""

    def count(input):
        from medsynth.io.npz import slices_in  # at job time: the package, without torch

        # Before a checkpoint has run, a named input may be missing or a placeholder: None, as for absent files.
        counts = [slices_in(getattr(input, name, None) or [None]) for name, _ in parts]
        return None if None in counts else sum(n * b for n, (_, b) in zip(counts, parts))

    return count


def train_mem_mb(wildcards):
    """Per training process (one per GPU): its own copy of the slices held in memory
    (train.ram_cache_gb) plus model, optimiser and batches."""
    settings = config["experiments"][wildcards.experiment].get("train") or {}
    return int((1000 * settings.get("ram_cache_gb", 32) + 8000) * max(1, experiment_gpus(wildcards)))


def experiment_gpus(wildcards):
    """GPUs of an experiment's training job (experiments.<name>.gpus); 0 on a CPU-only run."""
    return int(config["experiments"][wildcards.experiment].get("gpus", 0))


def image_dataset(wildcards):
    """The dataset of an experiment's real images (dataset B in unpaired mode)."""
    exp = config["experiments"][wildcards.experiment]
    return exp.get("images_from", exp["dataset"]) if exp["train"]["mode"] == "unpaired" else exp["dataset"]


def card_datasets(wildcards):
    """The datasets a generator learnt from, by role: {dataset: role} for its model card."""
    labels, images = experiment_dataset(wildcards), image_dataset(wildcards)
    if labels == images:
        return {labels: "label maps and images (paired)"}
    return {labels: "label maps", images: "images (unpaired: other patients)"}


def label_names(dataset):
    """The class names a dataset's label table lists (other tables' classes are matched to them by name);
    None for an image-only dataset."""
    return None if image_only(dataset) else [e["name"] for e in config["datasets"][dataset]["labels"]]


def segmenter_input(wildcards):
    """Segmentation consistency's segmenter, trained on the image dataset's labelled training slices; none
    for an image-only dataset (evaluate reports NA with the reason)."""
    dataset = image_dataset(wildcards)
    return {} if image_only(dataset) else {"segmenter": f"results/segmenter/{dataset}/segmenter.pt"}


def source_licences(wildcards):
    """A fine-tuned generator's sources that are this workflow's experiments (init_from
    results/select/<e>/generator.pt, and that one's source in turn): their datasets' licences as the
    config states them; those generators' cards, written at selection, hold none."""
    licences, experiment, seen = {}, wildcards.experiment, set()
    while experiment not in seen:
        seen.add(experiment)
        source = config["experiments"][experiment]["train"].get("init_from") or ""
        experiment = next((e for e in EXPERIMENTS if source == f"results/select/{e}/generator.pt"), experiment)
        if experiment not in seen:
            for d in card_datasets(SimpleNamespace(experiment=experiment)):
                licences[d] = config["datasets"][d].get("licence")
    return canonical(licences)


def unpaired_image_inputs(wildcards):
    """Unpaired mode: dataset B's train/val slices, the real side of the adversarial game."""
    exp = config["experiments"][wildcards.experiment]
    if exp["train"]["mode"] != "unpaired":
        return {}
    return {
        "images_train": case_slices(exp["images_from"], ("train",)),
        "images_val": case_slices(exp["images_from"], ("val",)),
    }


def init_from_input(wildcards):
    """Fine-tuning: the checkpoint the run starts from, an input so that a new file reruns training."""
    source = config["experiments"][wildcards.experiment]["train"].get("init_from")
    return {"init_from": source} if source else {}


def case_slices(dataset, parts):
    return case_paths(dataset, split_of(dataset, parts), "results/slices/{dataset}/cases/{case}/slices.npz")


def case_meta(dataset, parts):
    """The preprocessing meta.json (intensity curve, grids) of each case in the split parts."""
    return case_paths(dataset, split_of(dataset, parts), "results/preprocess/{dataset}/{case}/meta.json")


def case_paths(dataset, cases, template):
    """``template`` (with {dataset} and {case}) for each case; for a case that cannot be
    preprocessed (``case_problem``), the check that fails naming why stands in.

    Snakemake refuses the whole DAG over one missing input file, and fails outside any job
    (stopping --keep-going, and again when it tidies up at the end) over a file where an
    output folder belongs. With the check in their place, no job of such a case enters the
    DAG: the check fails that case alone, and what needs the case waits for it.
    """
    return [
        case_check(dataset, case) if case_problem(dataset, case) else template.format(dataset=dataset, case=case)
        for case in cases
    ]


def case_check(dataset, case):
    return f"logs/case_check/{dataset}/{case}.failed"


def case_problem(dataset, case):
    """True when a file (or DICOM folder) of the case is missing or a file stands where one of its folders belongs."""
    row = cases_of(dataset)[case]
    if not all(os.path.exists(row[k]) for k in ("image", "label", "mask") if row.get(k)):
        return True
    return any(map(blocked, case_outputs(dataset, case)))


def case_outputs(dataset, case):
    """Every file the per-case rules write for a case."""
    paths = [*rules.preprocess.output, *rules.preprocess.log, *rules.slice.output, *rules.slice.log]
    return sorted(set(expand(paths, dataset=dataset, case=case)))


def blocked(path):
    """True when a file (not a folder) stands where one of the folders of ``path`` belongs."""
    parent = os.path.dirname(os.path.normpath(path))
    while parent:
        if os.path.lexists(parent):
            return not os.path.isdir(parent)
        parent = os.path.dirname(parent)
    return False


def preprocess_inputs(wildcards):
    d, case = wildcards.dataset, wildcards.case
    if case_problem(d, case):
        return {"check": case_check(d, case)}
    row = cases_of(d)[case]
    return {k: row[k] for k in ("image", "label", "mask") if row.get(k)}


def case_series(dataset, case):
    """The SeriesInstanceUIDs a case's DICOM folders are read by (file column -> UID; empty for NIfTI)."""
    row = cases_of(dataset)[case]
    return {col: row[f"{col}_series"] for col in ("image", "label", "mask") if row.get(f"{col}_series")}


# The per-case rules and the batch table that joins them into one cluster job per batch of cases.
BATCHED_RULES = ("preprocess", "slice", "slice_batch")


def batches_planned():
    """True when a profile puts the per-case rules and slice_batch in one group (profiles/slurm).

    Snakemake submits the connected jobs of a group as one cluster job: slice_batch, which needs
    the slices of a batch of cases, connects their preprocessing and slicing. Without such a
    profile (a local run) nothing is planned and nothing changes."""
    settings = workflow.group_settings
    groups = settings.overwrite_groups if settings is not None else {}
    return groups.get("preprocess") is not None and len({groups.get(r) for r in BATCHED_RULES}) == 1


_BATCHES = {}


def case_batches(dataset):
    """A dataset's cases in case-id order, in batches of cluster.cases_per_job. A case that cannot
    be preprocessed (case_problem) is left out: its case_check fails alone, where in a batch it
    would keep the whole batch from starting."""
    rows = cases_of(dataset)
    # Once per version of the cases table (cases_of's rows): every batch's inputs ask, and the
    # checks of a thousand cases' files are not free on a network filesystem.
    if dataset not in _BATCHES or _BATCHES[dataset][0] is not rows:
        cases = [case for case in sorted(rows) if not case_problem(dataset, case)]
        n = config["cluster"]["cases_per_job"]
        _BATCHES[dataset] = (rows, [cases[i : i + n] for i in range(0, len(cases), n)])
    return _BATCHES[dataset][1]


def batch_tables(wildcards):
    """Every batch's table when the per-case rules are grouped (for rule all); none otherwise."""
    if not batches_planned():
        return []
    return [f"results/slices/{d}/batches/{i:03d}.tsv" for d in DATASETS for i in range(len(case_batches(d)))]


def batch_slices(wildcards):
    cases = case_batches(wildcards.dataset)[int(wildcards.batch)]
    return expand("results/slices/{dataset}/cases/{case}/slices.npz", dataset=wildcards.dataset, case=cases)


def slice_inputs(wildcards):
    out = rules.preprocess.output
    return {n: case_paths(wildcards.dataset, [wildcards.case], out[n])[0] for n in ("image", "label", "mask")}


def generate_case_inputs(wildcards):
    """The label cases to generate for: the generate.splits parts of the experiment's dataset and
    every case of its generate_from datasets (slices, preprocessing meta, source label maps), the
    dataset's split table and the generate_from datasets' cases tables (patients)."""
    exp = config["experiments"][wildcards.experiment]
    own = experiment_dataset(wildcards)
    wanted = [(own, split_of(own, config["generate"]["splits"]))]
    wanted += [(d, sorted(cases_of(d))) for d in exp.get("generate_from", [])]
    inputs = {"slices": [], "meta": [], "grid_label": [], "source_label": [], "split": checkpoints.split.get(dataset=own).output.split,
              # Patients of the generate_from cases: their cases tables (such a dataset is never split).
              "case_tables": [checkpoints.download.get(dataset=d).output.cases for d in exp.get("generate_from", [])]}
    for dataset, cases in wanted:
        inputs["slices"] += case_paths(dataset, cases, "results/slices/{dataset}/cases/{case}/slices.npz")
        inputs["meta"] += case_paths(dataset, cases, "results/preprocess/{dataset}/{case}/meta.json")
        # The whole training-grid label map: generation covers every labelled slice, not only the sliced ones.
        inputs["grid_label"] += case_paths(dataset, cases, "results/preprocess/{dataset}/{case}/label.nii.gz")
        # The label maps written beside the synthetic volumes come from the source files themselves.
        inputs["source_label"] += [
            case_check(dataset, c) if case_problem(dataset, c) else cases_of(dataset)[c]["label"] for c in cases
        ]
    return inputs


def export_inputs(wildcards):
    """generate's manifest and the split tables of the datasets the generator learnt from (the export
    refuses a case of their test patients); with export.include_real the image dataset's real cases of
    the exported parts (their image and label files), its cases table and split, unless it is image-only."""
    inputs = {"manifest": f"results/generate/{wildcards.experiment}/manifest.tsv",
              "split_tables": [f"results/split/{d}/split.tsv" for d in card_datasets(wildcards)]}
    # An image-only dataset's real images have no label maps to ship them with (the export says so).
    if config["export"]["include_real"] and not image_only(image_dataset(wildcards)):
        dataset = image_dataset(wildcards)
        rows = cases_of(dataset)
        cases = split_of(dataset, export_parts())
        inputs["real_cases"] = checkpoints.download.get(dataset=dataset).output.cases
        inputs["real_split"] = checkpoints.split.get(dataset=dataset).output.split
        inputs["real_files"] = [rows[c][k] for c in cases for k in ("image", "label")]
    return inputs


def audit_shared_inputs(wildcards):
    """What the memorisation audit of the exported cases reads: the slices each exported case was generated
    from (its body masks; paired, the real image of its label map), the test cases' real slices (paired:
    the unit of the own-image distance), and the image dataset's training slices (and their patients) and
    test slices (the unit of the nearest-training distance)."""
    exp = config["experiments"][wildcards.experiment]
    own, images = experiment_dataset(wildcards), image_dataset(wildcards)
    shared = [(own, split_of(own, export_parts()))] + [(d, sorted(cases_of(d))) for d in exp.get("generate_from", [])]
    return {
        "shared": [p for d, cases in shared for p in case_paths(d, cases, "results/slices/{dataset}/cases/{case}/slices.npz")],
        "test": case_slices(own, ("test",)),
        "train_images": case_slices(images, ("train",)),
        "train_split": checkpoints.split.get(dataset=images).output.split,
        "reference": case_slices(images, ("test",)),
    }


def exports(experiment):
    """True when the experiment ships synthetic cases (export.splits parts or generate_from datasets)."""
    return bool(export_parts() or config["experiments"][experiment].get("generate_from"))


def shared_audit_input(wildcards):
    """The memorisation audit of the exported cases, for the model card; none when nothing is exported."""
    if not exports(wildcards.experiment):
        return {}
    return {"audit": f"results/export/{wildcards.experiment}/memorisation_audit.tsv"}


def export_parts():
    """The split parts export ships: export.splits, else generate's parts other than test."""
    return config["export"].get("splits") or [p for p in config["generate"]["splits"] if p != "test"]


def export_naming():
    """What names every experiment's nnU-Net dataset (medsynth.sharing.nnunet_export.export_folders derives
    the names from it): ids and names are assigned across experiments, so each rule sees them all."""
    keys = ("export_id", "export_name")
    return {
        "export": {"first_id": config["export"]["first_id"]},
        "experiments": {e: {k: x[k] for k in keys if k in x} for e, x in sorted(config["experiments"].items())},
    }


def generate_only_datasets():
    """Datasets named only in generate_from: all their cases are label maps to generate for, so
    they are never split (a handful of label maps cannot fill train, val and test)."""
    named = {e.get(k) for e in config["experiments"].values() for k in ("dataset", "images_from")}
    extra = {d for e in config["experiments"].values() for d in e.get("generate_from", [])}
    return extra - named


def utility_label_slices(wildcards):
    """The label cases whose synthetic images the utility curve trains on: the training label maps and
    every case of the generate_from datasets (generate's SYNTHETIC_PARTS)."""
    exp = config["experiments"][wildcards.experiment]
    slices = case_slices(experiment_dataset(wildcards), ("train",))
    for dataset in exp.get("generate_from", []):
        slices += case_paths(dataset, sorted(cases_of(dataset)), "results/slices/{dataset}/cases/{case}/slices.npz")
    return slices


def utility_card_input(wildcards):
    """The utility curve's table for the model card, when the curve is planned."""
    return {"utility": f"results/utility/{wildcards.experiment}/utility.tsv"} if utility_planned(wildcards.experiment) else {}


def utility_trainings():
    """At most how many segmenters the utility curve trains: per k and draw two, and one synthetic only."""
    return 2 * len(config["utility"]["real_patients"]) * config["utility"]["draws"] + 1


def utility_planned(experiment):
    """The utility benchmark needs training label maps with synthetic images, and (unpaired) an image
    dataset that labels every class of the experiment's table (by name, in any order), whose real cases
    train and test the segmenters."""
    return not utility_skipped(experiment)


def utility_skipped(experiment):
    """Why the utility benchmark is not planned for an experiment (the summary says it); "" when it is."""
    exp = config["experiments"][experiment]
    if "train" not in config["generate"]["splits"]:
        return "not run: generate.splits has no train part, so there are no synthetic training images"
    if exp["train"]["mode"] != "unpaired":
        return ""
    if image_only(exp["images_from"]):
        return (f"not run: the image dataset {exp['images_from']} has no label maps (image-only), so no "
                "segmenter can be trained or scored on its real images")
    # Class names after the background (class 0 whatever its name), with the body every table gets.
    names = lambda d: {e["name"] for e in config["datasets"][d]["labels"][1:]} | {"body"}  # noqa: E731
    missing = sorted(names(exp["dataset"]) - names(exp["images_from"]))
    if missing:
        return (f"not run: the image dataset {exp['images_from']} does not label {missing} of {exp['dataset']}'s "
                "classes")
    return ""


def all_targets():
    targets = expand("results/slices/{dataset}/oasis", dataset=sorted(set(DATASETS) - generate_only_datasets()))
    for exp in EXPERIMENTS:
        targets += expand(
            "reports/{experiment}/{name}",
            experiment=exp,
            name=["summary.md", "metric_curves.png", "loss_curves.png", "samples.png", "case_strip.png",
                  "side_views.png", "class_intensity.png", "memorisation.png"],
        )
        targets.append(f"results/select/{exp}/MODEL_CARD.md")
        if utility_planned(exp):
            targets.append(f"reports/{exp}/utility_curve.png")
        if exports(exp):  # training cases were made
            targets.append(f"results/export/{exp}/nnUNet_raw")
    return targets
