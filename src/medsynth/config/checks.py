"""Checks of a workflow config that need medsynth's own rules, made when the workflow loads it.

The schema checks keys and types; what only the label table or a model preset can say
(a value listed twice, a slice size a network cannot take) would otherwise surface in
every case's preprocessing job, or only when training starts after all of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from medsynth.config.keys import is_image_only as image_only
from medsynth.data.labels import LabelError, LabelTable
from medsynth.config.leakage import leakage_errors
from medsynth.data.patients import KnownPatients
from medsynth.sharing.nnunet_naming import export_folders
from medsynth.models.presets import check_size, get_preset


def config_errors(config: Mapping, label_files: Mapping[str, str] | None = None,
                  workdir: str | Path = Path()) -> list[str]:
    """Messages naming the config key (and the label-table file it came from, if any); empty when fine.

    ``workdir``: Snakemake's working directory, where downloaded datasets' cases tables lie.
    """
    # One message per wrong slice.size: the segmenter's is only worth reading once the generator's is fixed.
    size_errors = slice_size_errors(config) or segmenter_size_errors(config)
    return [*label_table_errors(config["datasets"], label_files or {}), *image_only_errors(config), *size_errors,
            *require_classes_errors(config), *unpaired_spacing_errors(config), *unpaired_select_errors(config),
            *unused_gpu_errors(config),
            *class_stats_errors(config),
            *export_errors(config), *generate_from_errors(config), *init_from_errors(config),
            *leakage_errors(config, KnownPatients(config, workdir))]


def unpaired_spacing_errors(config: Mapping) -> list[str]:
    """Unpaired mode learns the image dataset's images conditioned on the label dataset's maps: at two
    in-plane spacings, organs would have one size in the maps and another in the images it imitates."""
    datasets, errors = config["datasets"], []
    for name in sorted(config.get("experiments") or {}):
        exp = config["experiments"][name]
        pair = (exp.get("dataset"), exp.get("images_from"))
        if (exp.get("train") or {}).get("mode") != "unpaired" or not all(d in datasets for d in pair):
            continue
        spacing = [(datasets[d].get("preprocess") or {}).get("spacing_xy") for d in pair]
        if spacing[0] != spacing[1]:
            errors.append(f"config: experiments.{name} is unpaired with datasets.{pair[0]}.preprocess.spacing_xy "
                          f"{spacing[0]} but datasets.{pair[1]}.preprocess.spacing_xy {spacing[1]}: set both to "
                          "one spacing, so organs have one size in the label maps and the images")
    return errors


def unused_gpu_errors(config: Mapping) -> list[str]:
    """``gpus`` is what the training job asks the cluster for (and the segmenters and Inception jobs of its
    image dataset, one each); ``train.device: cpu`` trains on none of them: GPUs held idle for days."""
    errors = []
    for name, exp in sorted((config.get("experiments") or {}).items()):
        gpus = int(exp.get("gpus") or 0)
        if gpus > 0 and (exp.get("train") or {}).get("device") == "cpu":
            errors.append(f"config: experiments.{name}.gpus is {gpus}, but experiments.{name}.train.device is cpu: "
                          f"its jobs would hold {gpus} GPU(s) of the cluster they never use; set "
                          f"experiments.{name}.gpus: 0 to train on CPUs, or train.device: auto to train on the GPUs")
    return errors


PIXEL_ALIGNED = ("ssim", "psnr", "rmse")  # validation computes them against the label map's own image only


def unpaired_select_errors(config: Mapping) -> list[str]:
    """Unpaired validation has no SSIM/PSNR/RMSE, FID/KID none without weights: select would fail after training."""
    errors, select, experiments = [], config.get("select") or {}, config.get("experiments") or {}
    for name in sorted(e for e in experiments if (experiments[e].get("train") or {}).get("mode") == "unpaired"):
        metric = experiments[name].get("select_metric", select.get("metric"))
        fallback = experiments[name].get("select_fallback", select.get("fallback"))
        if metric in PIXEL_ALIGNED:
            key, value, why = "select_metric", metric, ""
        elif metric in ("fid", "kid") and (fallback is None or fallback in PIXEL_ALIGNED):
            key, value, why = "select_fallback", fallback, f", and {metric} is NA without the Inception weights"
        else:
            continue
        errors.append(f"config: experiments.{name}.{key} is {value} (or its default under select:), but the "
                      f"experiment is unpaired: validation computes no ssim, psnr or rmse{why}, so selection "
                      f"would find nothing after training; set experiments.{name}.{key}: intensity_w1 (or body_dice)")
    return errors


def require_classes_errors(config: Mapping) -> list[str]:
    """``slice.require_classes`` names classes of every labelled dataset's table (image-only ones keep all
    their body slices): a name a table lacks would silently drop every slice of that dataset."""
    required = list((config.get("slice") or {}).get("require_classes") or [])
    errors = []
    for name in sorted(d for d in config["datasets"] if not image_only(config["datasets"][d])):
        try:
            names = LabelTable.from_config(config["datasets"][name]["labels"]).names
        except (LabelError, KeyError, TypeError):
            continue  # label_table_errors names it
        missing = [c for c in required if c not in names]
        if missing:
            errors.append(f"config: slice.require_classes names {missing}, which datasets.{name}.labels does not "
                          f"have (its classes: {list(names)}); fix the names or give that table the classes")
    return errors


def image_only_errors(config: Mapping) -> list[str]:
    """An image-only dataset has no label maps: it can only give an unpaired experiment its real images
    (images_from; the class-statistics loss, which needs them, is ``class_stats_errors``'); its layout finds
    no label files."""
    datasets, errors = config["datasets"], []
    for name in sorted(datasets):
        layout = datasets[name].get("layout") or {}
        if image_only(datasets[name]) and layout and not layout.get("image"):
            errors.append(f"config: datasets.{name} is label-only (layout has no image) and has no labels: add "
                          "its label table (labels:)")
        elif image_only(datasets[name]) and layout.get("label"):
            errors.append(f"config: datasets.{name}.layout.label is set, but the dataset has no labels: add its "
                          "label table (labels:), or leave layout.label out for an image-only dataset")
    for name in sorted(config.get("experiments") or {}):
        exp = config["experiments"][name]
        roles = [("dataset", exp.get("dataset"))] + [("generate_from", d) for d in exp.get("generate_from", [])]
        for key, d in roles:
            if d in datasets and image_only(datasets[d]):
                errors.append(f"config: experiments.{name}.{key} names {d!r}, an image-only dataset (no labels): "
                              "its images have no label maps to train or generate from; it can only be an "
                              "unpaired experiment's images_from (or give it a label table)")
    return errors


def init_from_errors(config: Mapping) -> list[str]:
    """``train.init_from`` names a file that exists, or one another experiment's select stage writes."""
    made = {f"results/select/{name}/generator.pt" for name in config.get("experiments") or {}}
    errors = []
    for name, exp in sorted((config.get("experiments") or {}).items()):
        source = (exp.get("train") or {}).get("init_from")
        if not source:
            continue
        if source == f"results/select/{name}/generator.pt":
            errors.append(f"config: experiments.{name}.train.init_from is the experiment's own generator; give "
                          "another experiment's, or a checkpoint file")
        elif source not in made and not Path(source).is_file():
            errors.append(f"config: experiments.{name}.train.init_from: {source} does not exist; give an exported "
                          "generator.pt, a run's latest.pt or an EMA snapshot (or results/select/<other "
                          "experiment>/generator.pt)")
    return errors


def label_table_errors(datasets: Mapping[str, Mapping], label_files: Mapping[str, str]) -> list[str]:
    errors = []
    for name in sorted(d for d in datasets if not image_only(datasets[d])):
        try:
            LabelTable.from_config(datasets[name]["labels"])
        except LabelError as exc:
            where = f"datasets.{name}.labels" + (f" (from {label_files[name]})" if name in label_files else "")
            errors.append(f"config: {where}: {exc}; fix the label table")
    return errors


def slice_size_errors(config: Mapping) -> list[str]:
    experiments = config.get("experiments") or {}
    if not experiments:
        return []

    size = config["slice"]["size"]
    errors = []
    for name in sorted(experiments):
        preset = experiments[name]["train"]["model"]
        spec = get_preset(preset)
        try:
            check_size(spec, size, f"slice.size with experiments.{name}.train.model = {preset!r}")
        except ValueError as exc:
            m = spec.min_size_multiple
            nearest = sorted({max(m, size - size % m), size - size % m + m})
            errors.append(f"config: {exc} (e.g. slice.size: {' or '.join(map(str, nearest))})")
    return errors


def segmenter_size_errors(config: Mapping) -> list[str]:
    """The segmenter pools len(channels) - 1 times; a size it cannot take would fail only when its rule runs.

    Without the key (a config not yet given the schema's defaults) there is nothing to check;
    the default's 3 poolings fit every preset's size multiple anyway.
    """
    channels = (config.get("metrics") or {}).get("segmenter_channels")
    if not config.get("experiments") or not channels:
        return []
    size, m = config["slice"]["size"], 2 ** (len(channels) - 1)
    if size % m:
        return [f"config: slice.size {size} must be a multiple of {m} for metrics.segmenter_channels = "
                f"{list(channels)} ({len(channels) - 1} poolings); change slice.size or use fewer levels"]
    return []


def _class_names(datasets: Mapping[str, Mapping], a: str, b: str) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """The class names of two datasets' label tables; None when either table cannot be read (a wrong
    table is reported by label_table_errors, an unknown dataset by the workflow's own checks)."""
    try:
        return tuple(LabelTable.from_config(datasets[d]["labels"]).names for d in (a, b))
    except (LabelError, KeyError, TypeError):
        return None


def class_stats_errors(config: Mapping) -> list[str]:
    """Unpaired ``lambda_class_stats`` pulls each class to the image dataset's own mean and std for that class id.

    That needs the image dataset labelled with the same classes in the same order (training
    compares class ids; evaluation matches tables by name and needs neither); an unlabelled MR
    set (image-only: no labels) cannot give them.
    """
    errors = []
    datasets = config["datasets"]
    for name in sorted(config.get("experiments") or {}):
        exp = config["experiments"][name]
        train = exp["train"]
        if train.get("mode") != "unpaired" or not train.get("lambda_class_stats") or "images_from" not in exp:
            continue
        where = f"config: experiments.{name}.train.lambda_class_stats"
        if exp["images_from"] in datasets and image_only(datasets[exp["images_from"]]):
            errors.append(f"{where} pulls each class to its mean and std in datasets.{exp['images_from']}, which has "
                          "no labels (image-only): there are none to pull to; set lambda_class_stats: 0, or label "
                          f"that dataset with the classes of datasets.{exp['dataset']}.labels in their order")
            continue
        names = _class_names(datasets, exp["dataset"], exp["images_from"])
        if names and names[0] != names[1]:
            names_a, names_b = names
            errors.append(
                f"{where} needs datasets.{exp['images_from']}.labels "
                f"to list the classes of datasets.{exp['dataset']}.labels in the same order "
                f"({list(names_a)}; it has {list(names_b)}): training compares class ids; reorder or label the "
                "image dataset, or set lambda_class_stats: 0"
            )
    return errors


def export_errors(config: Mapping) -> list[str]:
    """Export takes generated cases of parts generate made, one dataset id per experiment, ids in 1..999."""
    gen = list((config.get("generate") or {}).get("splits", ["test"]))
    exp_cfg = config.get("export") or {}
    errors = []
    if "test" not in gen:
        errors.append(f"config: generate.splits is {gen}: add test, the part evaluate scores")
    missing = [p for p in exp_cfg.get("splits", []) if p not in gen]
    if missing:
        errors.append(f"config: export.splits holds {missing}, which generate.splits ({gen}) does not generate; "
                      "add them to generate.splits")
    errors += _real_export_errors(config) if exp_cfg.get("include_real") else []
    try:
        folders = export_folders(config)
    except ValueError as err:
        return [*errors, f"config: {err} (experiments.<name>.export_id / export_name, export.first_id)"]
    ids: dict[str, list[str]] = {}
    for name, folder in folders.items():
        ids.setdefault(folder[len("Dataset"):len("Dataset") + 3], []).append(name)
    errors += [f"config: experiments {names} export to the same nnU-Net dataset id {i}; "
               "give them different experiments.<name>.export_id" for i, names in sorted(ids.items()) if len(names) > 1]
    return errors


def _real_export_errors(config: Mapping) -> list[str]:
    """Real + synthetic in one dataset: an unpaired experiment's real cases are the image dataset's,
    whose label maps must name the same classes in the same order as the synthetic cases'."""
    errors = []
    for name in sorted(config.get("experiments") or {}):
        exp = config["experiments"][name]
        if exp.get("train", {}).get("mode") != "unpaired" or "images_from" not in exp:
            continue
        names = _class_names(config["datasets"], exp["dataset"], exp["images_from"])
        if names and names[0] != names[1]:
            names_a, names_b = names
            errors.append(f"config: export.include_real puts datasets.{exp['images_from']}'s real cases beside "
                          f"experiments.{name}'s synthetic ones, so its labels must list the classes of "
                          f"datasets.{exp['dataset']}.labels in the same order ({list(names_a)}; it has "
                          f"{list(names_b)}); relabel it or set export.include_real: false")
    return errors


def _label_only(dataset: Mapping) -> bool:
    """A local layout without an image pattern: a dataset of label maps only."""
    layout = dataset.get("layout") or {}
    return bool(layout) and not layout.get("image")


def generate_from_errors(config: Mapping) -> list[str]:
    """``generate_from`` datasets get images from a generator trained on another dataset's label maps:
    the same classes in the same order and the same in-plane spacing, or it paints the wrong organs
    at the wrong scale. A label-only dataset has no images to train on or imitate."""
    datasets = config["datasets"]
    errors = []
    for name in sorted(config.get("experiments") or {}):
        exp = config["experiments"][name]
        for key in ("dataset", "images_from"):
            if exp.get(key) in datasets and _label_only(datasets[exp[key]]):
                errors.append(f"config: experiments.{name}.{key} is {exp[key]!r}, a label-only dataset (layout "
                              "has no image); name it in experiments.<name>.generate_from instead")
        for other in exp.get("generate_from", []):
            where = f"config: experiments.{name}.generate_from names {other!r}"
            if other not in datasets:
                errors.append(f"{where}, which is not one of the datasets {sorted(datasets)}")
                continue
            names = _class_names(datasets, exp.get("dataset"), other)
            if names is None:
                continue
            names_a, names_b = names
            if names_a != names_b:
                errors.append(f"{where}, whose labels list {list(names_b)}; the generator knows "
                              f"{list(names_a)} (datasets.{exp['dataset']}.labels): same classes, same order")
            spacing = [datasets[d].get("preprocess", {}).get("spacing_xy") for d in (exp["dataset"], other)]
            if spacing[0] != spacing[1]:
                errors.append(f"{where}, whose preprocess.spacing_xy is {spacing[1]}; the generator was trained at "
                              f"{spacing[0]} (datasets.{exp['dataset']}.preprocess.spacing_xy): set the same")
    return errors
