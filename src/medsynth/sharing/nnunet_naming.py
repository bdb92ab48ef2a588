"""The names of the nnU-Net datasets an export writes, ``Dataset<NNN>_<Name>`` per experiment, and of its cases.

Apart from the export itself because the config checks use it at every Snakemake start, where the
export's imports (numpy, nibabel, tqdm) would cost a tenth of a second each time.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Iterable, Mapping

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


def case_identifiers(case_ids: Iterable[str]) -> dict[str, str]:
    """Generate's case id -> the stem of its nnU-Net case identifiers (``<stem>_syn<k>``), one per id.

    The id with every character but letters, digits, '_' and '-' made '_' (nnU-Net finds the channel suffix
    at the end, so a dot would do, but plain names travel best): ``extra.s0001`` -> ``extra_s0001``. Where
    that makes two ids one, letter case ignored (``P.01`` and ``P_01``; a case-insensitive file system gives
    ``p_01`` and ``P_01`` one file), each id it changed gets ``_`` and 8 hex digits of its SHA-256: the
    export wrote one case over the other's name and stopped, after a whole training and generation. An id
    that needs no change keeps its name, and a generation's names do not depend on the parts exported.
    """
    ids = sorted(set(case_ids))
    plain = {c: re.sub(r"[^A-Za-z0-9_\-]", "_", c) for c in ids}
    sharing: dict[str, int] = {}
    for stem in plain.values():
        sharing[stem.casefold()] = sharing.get(stem.casefold(), 0) + 1
    out = {c: f"{plain[c]}_{hashlib.sha256(c.encode()).hexdigest()[:8]}"
           if plain[c] != c and sharing[plain[c].casefold()] > 1 else plain[c] for c in ids}
    first: dict[str, str] = {}
    for case, stem in out.items():  # left: ids differing in letter case alone, which cases tables refuse
        other = first.setdefault(stem.casefold(), case)
        if other != case:
            raise ValueError(f"generate's manifest: cases {other!r} and {case!r} get one nnU-Net identifier {stem!r} "
                             "(letter case ignored, as a case-insensitive file system does): rename one of them in "
                             "its cases table")
    return out
