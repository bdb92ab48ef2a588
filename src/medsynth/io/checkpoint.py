"""Self-describing, atomic checkpoints.

A checkpoint holds everything needed to continue or to use a run without the
config that made it: step, networks, EMA, optimisers, RNG states, best metric,
metric history, resolved settings and package version. Loading uses
``weights_only=True`` so a checkpoint file can never execute code.
"""

from __future__ import annotations

from pathlib import Path

import torch

from medsynth.io.atomic import atomic_open

FORMAT = 1


def save_checkpoint(path: str | Path, payload: dict, keep_previous: str | Path | None = None) -> Path:
    """Write to a temporary name, fsync, rename: a crash leaves the previous file intact.

    With ``keep_previous``, the file being replaced is first renamed to that name, so one
    older checkpoint survives should the new one ever become unreadable.
    """
    # keep_previous: a crash between the renames leaves the previous one under that name, which resuming
    # looks for.
    with atomic_open(path, "wb", keep_previous=keep_previous) as fh:
        torch.save({"format": FORMAT, **payload}, fh)
    return Path(path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for truncated/foreign files
        raise ValueError(f"{path}: not a readable medsynth checkpoint ({exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path}: not a medsynth checkpoint of format {FORMAT}")
    return payload
