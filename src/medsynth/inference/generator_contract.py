"""What an exported generator (``generator.pt``) carries besides its weights, in one place.

``data``: what generation needs to read any label map the way training read its own (the label table,
the image modality and its intensity settings, the label grid's spacing, the slice size) and
``card_inputs``: what the select rule hands the model card from the config. The select rule builds
both (``workflow/rules/select.smk``), selection writes ``data`` into the file, generation
(``generate_cases``) and ``medsynth info`` read it back. Plain Python: the Snakefile imports it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

DATA_KEYS = ("labels", "modality", "mode", "preprocess", "label_preprocess", "slice")


def generator_data(labels: Sequence[Mapping], modality: str, mode: str, preprocess: Mapping,
                   label_preprocess: Mapping, slice_settings: Mapping) -> dict:
    """``labels``: the label dataset's table; ``modality``/``preprocess``: the image dataset's (its
    modality's keys); ``label_preprocess``: the label dataset's ``spacing_xy``; ``slice_settings``: ``slice``."""
    return {"labels": labels, "modality": modality, "mode": mode, "preprocess": dict(preprocess),
            "label_preprocess": dict(label_preprocess), "slice": dict(slice_settings)}


def exported_data(state: Mapping, source: Path) -> dict:
    """The ``data`` an exported generator carries, or a refusal naming the file and what to do."""
    data = state.get("data") or {}
    missing = [k for k in DATA_KEYS if k not in data and k not in ("mode", "label_preprocess")]
    if not data.get("labels") or missing:
        raise ValueError(f"{source}: holds no data settings (label table, spacing{', ' if missing else ''}"
                         f"{', '.join(missing)}); export it with the select stage of this version")
    return dict(data)


def label_spacing_xy(data: Mapping) -> float | None:
    """The in-plane spacing label maps are read at: the label dataset's, else (older files) the image's."""
    return data.get("label_preprocess", data["preprocess"]).get("spacing_xy")


def card_inputs(datasets: Mapping[str, Mapping], roles: Mapping[str, str], train: Mapping, slice_size: int) -> dict:
    """``datasets``: each dataset the generator learnt from with its ``source`` and ``modality``; ``roles``:
    dataset -> role (its order is the order of the split tables the select rule reads); ``train``: the
    experiment's card keys (``config.keys.CARD_TRAIN_KEYS``)."""
    return {"datasets": {d: {k: datasets[d][k] for k in ("source", "modality")} for d in roles},
            "roles": [[d, role] for d, role in roles.items()], "train": dict(train), "slice_size": int(slice_size)}
