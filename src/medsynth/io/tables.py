"""Small tab-separated tables: the contracts between pipeline stages."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from medsynth.io.atomic import atomic_open


def read_tsv(path: str | Path) -> list[dict[str, str]]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: table not found")
    # utf-8-sig: a table saved by a spreadsheet starts with a byte-order mark, which would otherwise be part
    # of the first column's name ('\ufeffcase_id': "missing column case_id").
    with path.open(newline="", encoding="utf-8-sig") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def write_tsv(path: str | Path, rows: Iterable[Mapping[str, object]], columns: Sequence[str]) -> Path:
    """Write rows atomically: a crash never leaves half a table for the next stage."""
    with atomic_open(path, newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns), delimiter="\t", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: format_value(row.get(c, "")) for c in columns})
    return Path(path)


def format_value(value: object) -> str:
    """Numbers in a form that round-trips; a missing metric is 'NA', never a made-up number."""
    if value is None:
        return "NA"
    if isinstance(value, float):
        return "NA" if math.isnan(value) else repr(value)
    if getattr(value, "ndim", None) == 0 and value != value:  # numpy's float32/16 NaN (no float): str() wrote "nan"
        return "NA"
    return str(value)


def parse_float(value: object) -> float:
    """A table cell as a number, read (a string, ``NA`` for a missing metric) or not yet written (None)."""
    return math.nan if value is None or value in ("", "NA", "nan") else float(value)
