"""Case tables: which image and label files form a dataset (``cases.tsv``)."""

from __future__ import annotations

from pathlib import Path

from medsynth.io.tables import read_tsv, write_tsv

CASE_COLUMNS = ["case_id", "image", "label", "modality"]


def read_cases(path: Path) -> list[dict[str, str]]:
    """Rows of a ``cases.tsv``, validated: unique ids, required columns, files that exist."""
    path = Path(path)
    rows = read_tsv(path)
    if not rows:
        raise ValueError(f"{path}: the cases table has no rows")
    missing_cols = [c for c in ("case_id", "image", "label") if c not in rows[0]]
    if missing_cols:
        raise ValueError(f"{path}: missing column(s) {missing_cols}; expected tab-separated case_id, image, label")
    seen: set[str] = set()
    for i, row in enumerate(rows, start=2):
        empty = [c for c in ("case_id", "image", "label") if not (row.get(c) or "").strip()]
        if empty:
            raise ValueError(f"{path}, line {i}: empty or missing {empty}; every row needs case_id, image and label")
        cid = row["case_id"]
        if not cid or any(ch in cid for ch in "/\\ \t"):
            raise ValueError(f"{path}, line {i}: case id {cid!r} must be non-empty without slashes or spaces")
        if cid in seen:
            raise ValueError(f"{path}, line {i}: duplicate case id {cid!r}")
        seen.add(cid)
        for col in ("image", "label"):
            f = Path(row[col]) if Path(row[col]).is_absolute() else path.parent / row[col]
            if not f.is_file():
                raise FileNotFoundError(f"{path}, line {i}: {col} file {f} of case {cid!r} does not exist")
            row[col] = str(f.resolve())
    return sorted(rows, key=lambda r: r["case_id"])


def register_local(table: Path, out_tsv: Path, modality: str) -> Path:
    """A local folder cohort: validate the user's table and write the pipeline's ``cases.tsv``."""
    rows = read_cases(table)
    for row in rows:
        row.setdefault("modality", modality)
        row["modality"] = row["modality"] or modality
    return write_tsv(out_tsv, rows, CASE_COLUMNS)
