"""Finished trainings of a utility curve that was stopped, kept for the next run.

The utility job trains up to 31 segmenters (``config/autopet.yaml``), each scored on the whole real test
split: about 11 hours. Snakemake deletes a job's declared outputs before it runs it again, so a job
stopped at its time limit (or by a node failure) would start again from the first segmenter and might
never finish. The workflow therefore keeps each finished training in a work folder beside the outputs
(``results/utility/<e>/utility.unfinished/``, no output of the rule, so Snakemake leaves it alone;
``io/kept.py``): one file per training (arm, k, draw) holding its test confusions and a key over what made
them; the next run takes a training whose key is the one it would make instead of training and scoring it
again, and the folder is removed once both tables are written (``stages.write_utility``).

What is kept is the per-unit confusions (``utility.score_confusions``), not the segmenter: the tables
are computed from them alone, so a resumed curve is bit-identical to an uninterrupted one; they are
integer counts of a few hundred kB (units x classes x classes), smaller than the weights; and a kept
training is not scored again either (46 minutes per segmenter on a CPU for AutoPET's test split).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

from medsynth.io.kept import MISSING, Kept
from medsynth.io.stamps import code_digest, digest_of, file_stamps

WORK_DIR = "utility.unfinished"  # beside the rule's tables
# utility settings that change no training and no confusion: the bootstrap is drawn again from the kept
# confusions by every run.
NOT_IN_KEY = ("bootstrap",)


def weights_digest(weights: torch.Tensor) -> str:
    """The slices a training draws, and how often: its sample weights over the pool, bit for bit."""
    array = weights.detach().cpu().contiguous().numpy()
    return hashlib.sha256(f"{array.dtype}{array.shape}".encode() + array.tobytes()).hexdigest()


class Straight:
    """Nothing kept between runs (``utility_curve`` called on its own: the tests, the memory bench): the
    interface of ``Resumable`` with nothing to resume."""

    def finished(self, name: str, what: Mapping[str, Any]) -> torch.Tensor | None:
        return None

    def close(self, name: str, what: Mapping[str, Any], confusions: torch.Tensor) -> None:
        pass


class Resumable(Straight):
    """Trainings kept in ``folder``, one file each, under a key over ``what`` makes the training (its arm, k,
    draw, patients and sample weights: ``utility_curve.training_identity``), the rule's ``inputs`` files
    (sizes and times: the pool's real slices, synthetic samples, manifest and split, and the test
    slices), ``settings`` (the recipe, the utility section but ``NOT_IN_KEY``, the class tables) and
    medsynth's code. ``reused``: the segmenter rule's model, part of the key of the training it stands in
    for (only that one: the others do not depend on it).

    The device and the number of threads are not in the key (how fast, not what, as for generation): a
    retry on another kind of GPU keeps the trainings of the first; their floats may differ in the last
    bits from those the second would train."""

    def __init__(self, folder: Path, inputs: Iterable[str | Path], settings: Mapping[str, Any],
                 reused: Path | None = None):
        self.kept = Kept(folder)
        kept = {k: v for k, v in settings.items() if k != "utility"}
        kept["utility"] = {k: v for k, v in settings.get("utility", {}).items() if k not in NOT_IN_KEY}
        self.common = digest_of({"files": file_stamps(inputs), "settings": kept, "code": code_digest()})
        self.reused = None if reused is None else file_stamps([reused])

    def key(self, what: Mapping[str, Any]) -> str:
        return digest_of({"what": what, "common": self.common, "model": self.reused if what.get("reused") else None})

    def path(self, name: str) -> Path:
        return self.kept.path(name)

    def finished(self, name: str, what: Mapping[str, Any]) -> torch.Tensor | None:
        """The confusions kept for ``name`` under this run's key; None when there are none (the file is then
        removed: another run's, of other inputs, settings or code, or unreadable)."""
        confusions = self.kept.get(name, self.key(what))
        return None if confusions is MISSING else confusions

    def close(self, name: str, what: Mapping[str, Any], confusions: torch.Tensor) -> None:
        """Keep a training once scored (atomically: ``io/kept.py``)."""
        self.kept.put(name, self.key(what), confusions)
