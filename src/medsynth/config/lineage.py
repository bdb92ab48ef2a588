"""Which patients the weights a fine-tuning starts from have learnt from: the experiments up its chain of
``train.init_from`` within one config (A's generator fine-tuned by B, B's by C: C starts from A's patients
too), and their datasets, whose splits the training checks (``data.split.check_training_patients``).

Plain Python on a validated config: the Snakefile loads it at every start.
"""

from __future__ import annotations

import os
from typing import Mapping


def source_experiment(experiments: Mapping[str, Mapping], path: str, here: str) -> str | None:
    """The experiment of ``experiments`` whose results hold ``path`` (results/<stage>/<experiment>/...,
    relative to the working directory ``here``), or None. However spelt: an absolute path, or one through a
    link, into ``here``'s results is the same file."""
    for spelling in (path, os.path.abspath(path), os.path.realpath(path)):
        relative = os.path.relpath(spelling, here) if os.path.isabs(spelling) else spelling
        parts = os.path.normpath(relative).split(os.sep)
        if len(parts) > 3 and parts[0] == "results" and parts[2] in experiments:
            return parts[2]
    return None


def init_from_chain(experiments: Mapping[str, Mapping], name: str, here: str) -> list[str]:
    """The experiments whose generators ``name`` starts from, nearest first, up the chain of init_from
    within the config; it stops at a checkpoint from elsewhere (whose patients no config here tells)."""
    chain: list[str] = []
    current = name
    while source := (experiments[current].get("train") or {}).get("init_from"):
        found = source_experiment(experiments, source, here)
        if found is None or found == name or found in chain:
            break
        chain.append(found)
        current = found
    return chain


def chain_datasets(experiments: Mapping[str, Mapping], name: str, here: str) -> list[str]:
    """The datasets every generator up ``name``'s init_from chain learnt from (an unpaired one's label and
    image datasets), sorted."""
    datasets = set()
    for source in init_from_chain(experiments, name, here):
        exp = experiments[source]
        datasets.add(exp["dataset"])
        if (exp.get("train") or {}).get("mode") == "unpaired":
            datasets.add(exp["images_from"])
    return sorted(datasets)
