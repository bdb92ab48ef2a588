"""The names of the nnU-Net datasets an export writes: ``Dataset<NNN>_<Name>`` per experiment.

Apart from the export itself because the config checks use it at every Snakemake start, where the
export's imports (numpy, nibabel, tqdm) would cost a tenth of a second each time.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

NAME = re.compile(r"^[A-Za-z0-9_]+$")


def dataset_folder(root: Path, dataset_id: int, name: str) -> Path:
    """``root/Dataset<NNN>_<Name>``; nnU-Net finds datasets by this three-digit id."""
    if not 1 <= int(dataset_id) <= 999:
        raise ValueError(f"export dataset_id {dataset_id} is not in 1..999 (nnU-Net's Dataset<NNN>)")
    if not NAME.match(name):
        raise ValueError(f"export name {name!r} may hold only letters, digits and underscores")
    return Path(root) / f"Dataset{int(dataset_id):03d}_{name}"


def default_name(experiment: str) -> str:
    """An experiment name as an nnU-Net dataset name: ``demo-unpaired`` -> ``DemoUnpaired``."""
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[^A-Za-z0-9]+", experiment) if part)


def export_folders(config: Mapping) -> dict[str, str]:
    """experiment -> its dataset folder name (``Dataset<NNN>_<Name>``), computed here only.

    ``config`` needs ``experiments`` (each with optional ``export_id`` / ``export_name``)
    and ``export.first_id``: an experiment without an id gets first_id + its position
    among the experiments sorted by name.
    """
    first = int((config.get("export") or {}).get("first_id", 500))
    out = {}
    for i, name in enumerate(sorted(config.get("experiments") or {})):
        exp = config["experiments"][name]
        out[name] = dataset_folder(Path(), int(exp.get("export_id", first + i)),
                                   exp.get("export_name") or default_name(name)).name
    return out
