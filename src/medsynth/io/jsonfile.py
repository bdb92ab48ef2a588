"""Small JSON records that a later job reads to decide what to do: written atomically."""

from __future__ import annotations

import json
from pathlib import Path

from medsynth.io.atomic import atomic_open


def write_json(path: str | Path, value: object) -> Path:
    """Atomically (``atomic_open``): a job killed mid-write leaves the previous record, never half of one."""
    with atomic_open(path) as fh:
        fh.write(json.dumps(value, indent=1, sort_keys=True) + "\n")
    return Path(path)


def read_json(path: str | Path) -> object:
    """The record in ``path``; ValueError naming the file when it is not JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not a JSON file ({exc})") from exc
