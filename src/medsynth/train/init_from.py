"""Fine-tuning: a new run's networks start from another run's checkpoint (``train.init_from``).

The source may be an exported ``generator.pt``, a run's ``latest.pt`` or an EMA
snapshot. Classes are matched by name (``models.classes``): shared ones keep
their weights, new ones start from this run's initialisation, dropped ones are
removed. What the source lacks (the discriminators, optimiser state) starts
fresh, and the log says so. The run is a new run: its fingerprint holds the
source file's digest, so it resumes, is selected and reported like any other.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Mapping, Sequence

import torch

from medsynth.data.same_files import hash_file
from medsynth.data.labels import LabelTable
from medsynth.models.classes import ClassMatch, match_classes, remap_state
from medsynth.models.registry import PRESETS, ModelSpec
from medsynth.io.checkpoint import load_checkpoint
from medsynth.train.settings import TrainSettings
from medsynth.train.step import Nets

log = logging.getLogger(__name__)


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file (first 16 hex digits): the source's part of a fine-tuning run's identity."""
    return hash_file(Path(path), ["sha256"])["sha256"][:16]


def source_class_names(state: dict, path: Path) -> tuple[str, ...]:
    """The class names of a checkpoint, in class-id order (the body class included)."""
    if state.get("classes"):
        return tuple(state["classes"])
    for entries in ((state.get("config") or {}).get("labels"), (state.get("data") or {}).get("labels")):
        if entries and not isinstance(entries, str):
            return LabelTable.from_config(entries).names
    raise ValueError(f"{path}: the checkpoint does not name its classes (an EMA snapshot of an older medsynth); "
                     "initialise from the run's latest.pt or its exported generator.pt instead")


def label_values(entries: Sequence[Mapping] | None) -> dict[str, tuple[int, ...]]:
    """Class name -> label values of a label table's config entries (empty without a table)."""
    if not entries or isinstance(entries, str):
        return {}
    table = LabelTable.from_config(entries)
    return {n: tuple(v) for n, v in zip(table.names, table.values)}


def source_label_values(state: dict) -> dict[str, tuple[int, ...]]:
    """The label values of a checkpoint's classes: ``latest.pt`` keeps its table under ``config``, an
    exported ``generator.pt`` under ``data``; an EMA snapshot stores class names only (empty then)."""
    return (label_values((state.get("config") or {}).get("labels"))
            or label_values((state.get("data") or {}).get("labels")))


def _describe(spec: ModelSpec) -> str:
    names = [n for n, p in PRESETS.items() if dataclasses.replace(p, context_slices=spec.context_slices) == spec]
    return f"{names[0] if names else 'a custom architecture'} with context_slices {spec.context_slices}"


def check_fits(state: dict, path: Path, spec: ModelSpec, slice_size: int) -> None:
    """Refuse a source of another architecture or slice size, naming both."""
    if "model" not in state or "ema" not in state:
        raise ValueError(f"{path}: holds no generator (keys {sorted(state)}); give an exported generator.pt, a "
                         "run's latest.pt or an EMA snapshot")
    source = ModelSpec.from_dict(state["model"])
    if source != spec:
        diff = ", ".join(f"{f.name} {getattr(source, f.name)} vs {getattr(spec, f.name)}"
                         for f in dataclasses.fields(spec) if getattr(source, f.name) != getattr(spec, f.name))
        raise ValueError(f"{path}: trained as {_describe(source)}, this run is {_describe(spec)} ({diff}); set "
                         "train.model and train.context_slices to the checkpoint's")
    size = state.get("slice_size") or ((state.get("data") or {}).get("slice") or {}).get("size")
    if size is not None and int(size) != slice_size:
        raise ValueError(f"{path}: trained on {size} px slices, this run's are {slice_size} px; set slice.size to "
                         f"{size}, or train from scratch")


def load_source(path: str | Path, spec: ModelSpec, slice_size: int) -> tuple[dict, tuple[str, ...]]:
    path = Path(path)
    state = load_checkpoint(path)
    check_fits(state, path, spec, slice_size)
    return state, source_class_names(state, path)


def initialise(nets: Nets, settings: TrainSettings, path: str | Path, spec: ModelSpec, slice_size: int,
               class_names: Sequence[str], labels: Sequence[Mapping] | None = None) -> ClassMatch:
    """Load ``path``'s weights into a new run's ``nets`` (before the first step); returns the class match.

    ``labels``: the run's label table (config entries), whose values let a class renamed between the
    two tables be warned about (``match_classes``)."""
    path = Path(path)
    state, source_names = load_source(path, spec, slice_size)
    if not class_names:
        raise ValueError("train.init_from needs the run's label table to match classes by name")
    match = match_classes(source_names, class_names, source_label_values(state), label_values(labels))
    log.info("init_from %s (step %s): shared classes %s keep their weights; new classes %s start fresh; dropped "
             "classes %s are removed", path, state.get("step", "?"), list(match.shared), list(match.new),
             list(match.dropped))
    n_src = len(source_names)

    def load(module: torch.nn.Module, weights: dict, axes: dict) -> None:
        try:
            module.load_state_dict(remap_state(weights, module.state_dict(), axes, match.mapping, n_src))
        except ValueError as exc:
            raise ValueError(f"{path}: does not fit this run's {type(module).__name__}: {exc}") from exc

    # An exported generator holds the EMA weights only: they start both G and its average.
    load(nets.G, state.get("G", state["ema"]), nets.G.class_axes())
    load(nets.ema.model, state["ema"], nets.G.class_axes())
    nets.ema.refresh()
    _load_discriminators(nets, state, path, load)
    _load_optimisers(nets, state, path, settings, match)
    return match


def _load_discriminators(nets: Nets, state: dict, path: Path, load) -> None:
    if "D" in state:
        load(nets.D, state["D"], nets.D.class_axes())
        log.info("init_from: the discriminator D from %s", path.name)
    else:
        log.info("init_from: %s holds no discriminator D; it starts fresh", path.name)
    if nets.Du is None:
        return
    if "Du" in state:
        load(nets.Du, state["Du"], {})
        log.info("init_from: the wavelet discriminator Du from %s", path.name)
    else:
        log.info("init_from: %s holds no wavelet discriminator Du; it starts fresh", path.name)


def _load_optimisers(nets: Nets, state: dict, path: Path, settings: TrainSettings, match: ClassMatch) -> None:
    """Adam's moments carry over only where every tensor did unchanged; the learning rates are this run's."""
    pairs = [("opt_g", nets.opt_g, settings.lr_g), ("opt_d", nets.opt_d, settings.lr_d)]
    if nets.opt_du is not None:
        pairs.append(("opt_du", nets.opt_du, settings.lr_d))
    for key, opt, lr in pairs:
        if key not in state:
            log.info("init_from: %s holds no optimiser state %s; it starts fresh", path.name, key)
        elif not match.identity and key != "opt_du":
            log.info("init_from: optimiser state %s starts fresh (the label table changed)", key)
        else:
            opt.load_state_dict(state[key])
            for group in opt.param_groups:
                group["lr"], group["betas"] = lr, (settings.beta1, settings.beta2)
            log.info("init_from: optimiser state %s from %s, at this run's learning rate %g", key, path.name, lr)
