"""Small JSON records that a later job reads to decide what to do: written atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_json(path: str | Path, value: object) -> Path:
    """Temporary name, fsync, rename: a job killed mid-write leaves the previous record, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    with tmp.open("w") as fh:
        fh.write(json.dumps(value, indent=1, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)
    return path


def read_json(path: str | Path) -> object:
    """The record in ``path``; ValueError naming the file when it is not JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not a JSON file ({exc})") from exc
