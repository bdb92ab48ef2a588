"""A workflow config read, validated and normalised the same way wherever it is used: by the Snakefile
when it starts (``common.smk``) and by ``medsynth`` commands given a config file.

The steps, in order: label tables kept in their own files are read into the config (``inline_label_files``),
the schema validates it and fills its defaults, ``normalise`` settles what YAML reads two ways,
``reference_errors`` checks the names experiments give datasets, and ``config.checks`` what only
medsynth's own rules can tell (it needs numpy and the model presets, so the Snakefile runs it only
where medsynth is installed). The first four need only PyYAML and Snakemake.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Mapping

import yaml

# The workflow's schema; the package is used from the repository (an editable install). The YAML is what
# people edit and errors name; its generated JSON twin is what is read (a hundred times faster to parse).
SCHEMA = Path(__file__).resolve().parents[3] / "workflow" / "schemas" / "config.schema.yaml"
SCHEMA_JSON = SCHEMA.with_suffix(".json")


class ConfigError(ValueError):
    """A config that cannot run; the message names every key at fault and what to do."""


def inline_label_files(config: dict) -> dict[str, str]:
    """Read each label table kept in its own file (``datasets.<d>.labels: path.yaml``) into the config, in
    place; returns the files by dataset (the checks name them). Only what has the expected shape is
    read: a malformed config reaches the schema unharmed."""
    files = {}
    datasets = config.get("datasets") if isinstance(config.get("datasets"), dict) else {}
    for name, ds in datasets.items():
        if isinstance(ds, dict) and isinstance(ds.get("labels"), str):
            if not os.path.isfile(ds["labels"]):
                raise ConfigError(f"config: datasets.{name}.labels names {ds['labels']!r}, which does not exist "
                                  "(a path relative to the working directory, or the table inline)")
            with open(ds["labels"]) as fh:
                files[name], ds["labels"] = ds["labels"], yaml.safe_load(fh)
    return files


# Lists whose order means nothing (sets of names, parts, k values): (section, key).
SET_LISTS = (("slice", "require_classes"), ("generate", "splits"), ("export", "splits"), ("utility", "real_patients"))
# Split parts in the split's order, as the configs list them (sorted by name, [train, test] would become
# [test, train]: a change of params that reruns a finished generation once).
PART_ORDER = {"train": 0, "val": 1, "test": 2}


def as_set(values: list) -> list:
    """A set-like list in one order: once each, split parts in PART_ORDER, the rest sorted (numbers before
    words: utility's ``all`` last)."""
    return sorted(set(values), key=lambda v: (PART_ORDER.get(v, len(PART_ORDER)), isinstance(v, str), v))


def normalise(config: dict) -> dict:
    """Settle values YAML reads in two ways, in place: an unquoted ``off`` is false; a set-like list
    (``SET_LISTS``, an experiment's ``generate_from``, a label class's ``values``) in one order, as the rules'
    params compare by their repr: ``generate.splits: [test, train]`` for ``[train, test]`` reran generation
    and everything after it."""
    if config["metrics"]["perceptual"] is False:
        config["metrics"]["perceptual"] = "off"
    for section, key in SET_LISTS:
        if isinstance((config.get(section) or {}).get(key), list):
            config[section][key] = as_set(config[section][key])
    for exp in config["experiments"].values():
        if exp.get("generate_from"):
            exp["generate_from"] = as_set(exp["generate_from"])
    for ds in config["datasets"].values():
        for entry in ds.get("labels") or []:
            entry["values"] = as_set(entry["values"])
    return config


def reference_errors(config: Mapping) -> list[str]:
    """Experiments that name a dataset the config does not have, or an unpaired one without real images."""
    datasets = sorted(config["datasets"])
    errors = []
    for name, exp in sorted(config["experiments"].items()):
        for key in ("dataset", "images_from"):
            if key in exp and exp[key] not in config["datasets"]:
                errors.append(f"config: experiments.{name}.{key} is {exp[key]!r}, which is not one of the "
                              f"datasets {datasets}")
        if exp["train"]["mode"] == "unpaired" and "images_from" not in exp:
            errors.append(f"config: experiments.{name} is unpaired: set images_from to the dataset of real images")
    return errors


def validate(config: dict, schema: Path = SCHEMA_JSON) -> None:
    """The schema's checks, its defaults filled in (Snakemake's validator, which the Snakefile uses too)."""
    from snakemake.utils import validate as snakemake_validate

    if not schema.is_file():
        raise ConfigError(f"{schema}: the config schema is missing; run medsynth from its repository checkout")
    try:
        snakemake_validate(config, str(schema))
    except Exception as exc:  # Snakemake's WorkflowError wraps jsonschema's ValidationError
        cause = exc
        while cause is not None and not hasattr(cause, "absolute_path"):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            raise ConfigError(str(exc)) from exc
        key = ".".join(str(k) for k in cause.absolute_path) or "(top level)"
        raise ConfigError(f"config: {key}: {cause.message} (the schema: {SCHEMA})") from exc


def validate_once(config: dict, schema: Path = SCHEMA_JSON, cache: str | Path | None = None) -> None:
    """``validate``, remembered in ``cache`` (a folder): a config validated before, with the same schema,
    takes its filled-in defaults from there. The Snakefile validates at every start, every job's on a
    cluster too, and importing the validator (jsonschema) alone is 0.03 s of a 1 s dry run. The key is the
    config's and the schema's content, so any edit validates afresh; a config JSON cannot spell exactly (a
    date or an integer key YAML read) is never remembered."""
    try:
        text = json.dumps(config, sort_keys=True)
    except (TypeError, ValueError):
        text = None
    if cache is None or text is None or json.loads(text) != config:  # e.g. integer keys would come back str
        validate(config, schema)
        return
    key = hashlib.sha256(text.encode() + b"\0" + Path(schema).read_bytes()).hexdigest()[:32]
    remembered = Path(cache, f"{key}.json")
    if remembered.is_file():
        config.clear()
        config.update(json.loads(remembered.read_text()))
        return
    validate(config, schema)
    try:  # where the working directory is read-only, validating every time is all that is lost
        remembered.parent.mkdir(parents=True, exist_ok=True)
        partial = remembered.with_name(f".{key}.{os.getpid()}.part")
        partial.write_text(json.dumps(config))
        partial.replace(remembered)  # atomic: jobs starting together never read half a file
    except OSError:
        pass


def config_problems(config: Mapping, label_files: Mapping[str, str], workdir: str | Path,
                    medsynth_checks: bool = True) -> list[str]:
    """What is wrong with a validated config: the datasets experiments name, then (``medsynth_checks``; they
    need numpy and the model presets) ``config.checks``. ``workdir``: where a url dataset's downloaded
    ``cases.tsv`` would lie."""
    errors = reference_errors(config)
    if errors or not medsynth_checks:
        return errors
    from medsynth.config.checks import config_errors

    return config_errors(config, label_files, str(workdir))


def load_config(path: Path, workdir: Path | None = None) -> dict:
    """A config file as the workflow would run it: label files read, validated with defaults, normalised
    and checked (``workdir``: where a url dataset's downloaded ``cases.tsv`` would lie; default the
    working directory). Raises ``ConfigError`` naming every problem."""
    config = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: a config is a mapping of sections (datasets, experiments, ...)")
    label_files = inline_label_files(config)
    validate(config)
    normalise(config)
    errors = config_problems(config, label_files, workdir or os.getcwd())
    if errors:
        raise ConfigError(f"{path}:\n" + "\n".join(errors))
    return config
