"""Which config keys each rule takes as params, so that changing one setting reruns exactly the stages
that use it (Snakemake's params rerun trigger; docs/reference/reruns.md).

Plain Python on a validated config, no third-party imports: the Snakefile loads this module at every
start, with or without medsynth installed where Snakemake runs.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from medsynth.train.keys import HOW_KEYS, MODE_ONLY

# The preprocessing settings each modality uses.
PREPROCESS_KEYS = {
    "CT": ("spacing_xy", "ct_window", "ct_soft_window", "ct_soft_share", "body_threshold_hu", "opening_mm"),
    "MR": ("spacing_xy", "mr_percentiles", "mr_body_fraction", "opening_mm"),
}
TRAIN_MODE_KEYS = MODE_ONLY  # the loss weights only one mode uses
# How a training runs, not what it makes: the scripts read these from the config, rules do not take them.
TRAIN_HOW_KEYS = HOW_KEYS
# What validation (train) and evaluation compute FID/KID with; metrics.batch_size is a how-key.
PERCEPTUAL_KEYS = ("perceptual", "weights_dir", "kid_subsets", "kid_subset_size")
SEGMENTER_KEYS = ("segmenter_steps", "segmenter_batch", "segmenter_channels")
# What the model card tells of a training (sharing/model_card.py: training, card_before_selection).
CARD_TRAIN_KEYS = ("model", "mode", "steps", "batch_size", "lr_g", "lr_d", "seed", "precision", "context_slices",
                   "init_from")
DOWNLOAD_KEYS = ("source", "modality", "phantom", "local", "url", "layout")


def canonical(value: Any) -> Any:
    """``value`` with every mapping's keys in sorted order, recursively (lists keep theirs).

    Snakemake compares a rule's params by their repr, in which a dict's key order counts:
    without this, the same config with its keys in another order would rerun everything."""
    if isinstance(value, Mapping):
        return {k: canonical(value[k]) for k in sorted(value)}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    return value


def only(section: Mapping, keys: Iterable[str]) -> dict:
    """The ``keys`` of a config section that one job uses, canonical (see above). Its params hold
    nothing else, so a setting reruns exactly the rules that use it."""
    return canonical({k: section[k] for k in keys if k in section})


def is_image_only(dataset: Mapping) -> bool:
    """A dataset (its config section) without a label table: images only (the unpaired mode's real images,
    e.g. unlabelled MR)."""
    return "labels" not in dataset


def image_only(config: Mapping, dataset: str) -> bool:
    """Whether the config's dataset of that name is image-only (``is_image_only``)."""
    return is_image_only(config["datasets"][dataset])


def labels_of(config: Mapping, dataset: str) -> list | None:
    """A dataset's label table as the config gives it, canonical; None for an image-only dataset (whose
    table medsynth makes: background and body, data/labels.py)."""
    return None if image_only(config, dataset) else canonical(config["datasets"][dataset]["labels"])


# What decides the slices (slice.pngs only whether people get PNGs of them): the slice settings a
# generator file records.
SLICE_KEYS = ("size", "min_body_fraction", "require_classes")


def slice_settings(config: Mapping, dataset: str) -> dict:
    """How a dataset is sliced: slice.size and min_body_fraction, and the class ids of
    slice.require_classes in its label table (an image-only dataset keeps every body slice; the key is
    there only when set, so configs without it keep their slices)."""
    settings = only(config["slice"], ("size", "min_body_fraction"))
    required = config["slice"].get("require_classes") or []
    if required and not image_only(config, dataset):
        names = [e["name"] for e in config["datasets"][dataset]["labels"]]
        names += [] if "body" in names else ["body"]
        settings["require_classes"] = sorted(names.index(n) for n in required if n in names)
    return settings


def download_source(config: Mapping, dataset: str) -> dict:
    """What the download of a dataset depends on; an image-only dataset's table holds no label maps
    (the key is there only then, so the other datasets' downloads do not rerun for it). A local dataset's
    leaves out the keys of other sources (the schema fills in ``phantom`` for every dataset) and, with a
    cases table, the layout: editing them reran its download, which wrote the same table."""
    ds = config["datasets"][dataset]
    source = only(ds, DOWNLOAD_KEYS)
    if ds.get("source") == "local":
        unused = ("phantom", "url", *(("layout",) if (ds.get("local") or {}).get("cases_table") else ()))
        source = {k: v for k, v in source.items() if k not in unused}
    return {**source, "image_only": True} if image_only(config, dataset) else source


def preprocess_settings(config: Mapping, dataset: str) -> dict:
    """A dataset's preprocessing settings that its modality uses (a CT's MR percentiles rerun nothing)."""
    ds = config["datasets"][dataset]
    return only(ds["preprocess"], PREPROCESS_KEYS[ds["modality"]])


def train_settings(config: Mapping, experiment: str) -> dict:
    """An experiment's training settings that decide what it learns (and ``steps``, which extends
    it; ``mask_threshold``, which changes validation; ``init_from``): not another mode's weights,
    nor the how-keys, with which a finished run would resume and do nothing."""
    train = config["experiments"][experiment]["train"]
    other = [k for mode, keys in TRAIN_MODE_KEYS.items() if mode != train["mode"] for k in keys]
    return only(train, [k for k in train if k not in TRAIN_HOW_KEYS and k not in other])
