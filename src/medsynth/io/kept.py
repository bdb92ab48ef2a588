"""Results a long job finished, kept in a work folder under a key for its retry.

Snakemake deletes a job's declared outputs before it runs it again, so a job stopped at its time limit
(or by a node failure) would compute everything again. A stage that finishes its work in pieces keeps
each piece in a folder beside its outputs (no output of the rule, so Snakemake leaves it alone), one
file per piece holding the piece and a key over what made it (``io/stamps.py``); the retry takes a
piece whose key is the one it would make and computes only the others. Users: the utility curve's
trainings (``evaluation/utility_resume.py``) and evaluate's parts (``evaluation/stages.py``).

A piece is what the stage returned, stored so that it reads back equal bit for bit: rows (dicts, lists
and tuples of str, int, float, bool and None), tensors, and numpy arrays and scalars (``weights_only``
loading refuses numpy objects, so an array is stored as a tensor, a scalar as its dtype and bytes).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medsynth.io.checkpoint import load_checkpoint, save_checkpoint

NUMPY = "__numpy__"  # the marker of a stored numpy array or scalar (no row has such a column)
PLAIN = (str, int, float, bool, type(None), bytes)


class Missing:
    """No piece kept under the key asked for (a piece may be None itself: no Inception weights)."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING = Missing()


def encode(value: Any, where: str = "value") -> Any:
    """``value`` as ``weights_only`` loading accepts it; a type it cannot store raises, naming where."""
    if isinstance(value, np.ndarray | np.generic) and np.asarray(value).dtype != object:
        return {NUMPY: _numpy(value)}
    if isinstance(value, PLAIN) or isinstance(value, torch.Tensor):
        return value.detach().cpu() if isinstance(value, torch.Tensor) else value
    if isinstance(value, dict):
        return {k: encode(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, list | tuple):
        items = [encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    raise TypeError(f"{where}: a {type(value).__name__} cannot be kept for a retry (rows of str, numbers, None, "
                    "tensors and numpy arrays can); convert it where the result is made")


def _numpy(value: np.ndarray | np.generic) -> torch.Tensor | list:
    """An array as a tensor (its bytes stored as they are: the Inception features of a whole test set are
    ~1 GB); a scalar, or an array of a dtype torch lacks, as its dtype, shape and bytes."""
    array = np.asarray(value)
    if isinstance(value, np.ndarray):
        try:
            return torch.from_numpy(np.ascontiguousarray(array))
        except TypeError:
            pass
    return [array.dtype.str, list(array.shape), array.tobytes(), isinstance(value, np.generic)]


def decode(value: Any) -> Any:
    """What ``encode`` stored, as it was."""
    if isinstance(value, dict):
        if set(value) == {NUMPY}:
            if isinstance(value[NUMPY], torch.Tensor):
                return value[NUMPY].numpy()
            dtype, shape, data, scalar = value[NUMPY]
            array = np.frombuffer(data, dtype=np.dtype(dtype)).reshape(shape).copy()
            return array[()] if scalar else array
        return {k: decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v) for v in value]
    if isinstance(value, tuple):
        return tuple(decode(v) for v in value)
    return value


class Kept:
    """Pieces kept in ``folder``, one file each (``<name>.pt``), each under the key it was made with.
    ``folder`` None: nothing kept (a stage called on its own: the tests, the benches)."""

    def __init__(self, folder: Path | None):
        self.folder = None if folder is None else Path(folder)

    def path(self, name: str) -> Path:
        if self.folder is None:
            raise ValueError(f"{name}: nothing is kept without a work folder")
        return self.folder / f"{name}.pt"

    def get(self, name: str, key: str) -> Any:
        """The piece kept as ``name`` under ``key``; ``MISSING`` when there is none (a file of another key,
        i.e. of other inputs, settings or code, or an unreadable one, is then removed)."""
        if self.folder is None:
            return MISSING
        path = self.path(name)
        if not path.exists():
            return MISSING
        try:
            payload = load_checkpoint(path)
            if payload.get("key") == key:
                return decode(payload["value"])
        except (ValueError, KeyError):
            pass
        path.unlink(missing_ok=True)
        return MISSING

    def put(self, name: str, key: str, value: Any) -> None:
        """Keep a finished piece: written to a temporary name and renamed, so a job killed while it writes
        leaves no half file that a retry would read."""
        if self.folder is not None:
            save_checkpoint(self.path(name), {"key": key, "value": encode(value, name)})

    def remove(self) -> None:
        """Once the stage's outputs are all written, the pieces are of no more use."""
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
