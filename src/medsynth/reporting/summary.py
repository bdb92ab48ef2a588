"""A short human summary of one experiment: markdown and a self-contained HTML page."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Callable, Mapping

from medsynth.io.tables import read_tsv

# What the summary shows of class_intensity.tsv (the file holds every percentile and both stds).
INTENSITY_SUMMARY_COLUMNS = ["class", "voxels_real", "voxels_generated", "mean_real", "mean_generated",
                             "mean_abs_error", "std_ratio", "p05_real", "p95_real", "outside_real_range"]
INTENSITY_NOTE = ("Mean intensity per class of the generated test images (in the label maps they came from) and of "
                  "the real test images (in their own labels), in {unit}. A row is flagged when the generated median "
                  "lies outside the real 5-95 % range; std_ratio is generated / real standard deviation (texture: "
                  "1 is right, below 1 too smooth).")


def _unit_phrase(unit: str) -> str:
    if unit == "HU":
        return "HU"
    return f"the networks' {unit} units (MR has no absolute scale: each case has its own percentile window)"


def _flagged(row: Mapping[str, str]) -> bool:
    return row.get("outside_real_range") == "True"


def _table_md(rows: list[dict], highlight: Callable[[dict], bool] = lambda r: False) -> str:
    if not rows:
        return "_no rows_\n"
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [_fmt(r[c]) for c in cols]
        lines.append("| " + " | ".join(f"**{c}**" if highlight(r) and c else c for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _table_html(rows: list[dict], highlight: Callable[[dict], bool] = lambda r: False) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in (rows[0] if rows else []))
    body = "".join(
        ("<tr style='background:#f8d0d0'>" if highlight(r) else "<tr>")
        + "".join(f"<td>{html.escape(_fmt(r[c]))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table border='1' cellpadding='4'><tr>{head}</tr>{body}</table>"


def _fmt(value: str) -> str:
    try:
        f = float(value)
    except ValueError:
        return value
    if math.isnan(f):  # a table cell "nan" (written by other tools) reads as every missing value does
        return "NA"
    return value if f.is_integer() and "." not in value else f"{f:.4g}"


def intensity_rows(path: Path) -> tuple[str, list[dict]]:
    """class_intensity.tsv's unit and its rows as the summary shows them (classes present on either side)."""
    rows = read_tsv(path)
    unit = rows[0]["unit"] if rows else ""
    shown = [r for r in rows if int(r["voxels_real"]) > 0 or int(r["voxels_generated"]) > 0]
    return unit, [{c: r[c] for c in INTENSITY_SUMMARY_COLUMNS} for r in shown]


def write_summary(
    experiment: str,
    selected_json: Path,
    test_metrics_tsv: Path,
    figures: Mapping[str, Path],
    md_path: Path,
    html_path: Path,
    tables: Mapping[str, Path | list[dict]] | None = None,
    class_intensity: Path | None = None,
    notes: Mapping[str, str] | None = None,
) -> None:
    """``tables``: title -> a TSV file or its rows; ``class_intensity``: evaluate's class_intensity.tsv, shown
    with its flagged classes highlighted;
    ``notes``: title -> why a part of the report is missing (e.g. a benchmark that could not run)."""
    selected = json.loads(Path(selected_json).read_text())
    metrics = read_tsv(test_metrics_tsv)
    extra = {title: read_tsv(t) if isinstance(t, (str, Path)) else [dict(r) for r in t]
             for title, t in (tables or {}).items()}
    intensity = intensity_rows(class_intensity) if class_intensity is not None else None
    md_dir = Path(md_path).parent
    rel = {title: Path(p).resolve().relative_to(md_dir.resolve()) for title, p in figures.items()}
    md = [
        f"# medsynth experiment `{experiment}`\n",
        f"Selected checkpoint: step **{selected['step']}**, {selected['reason']}.\n",
        "## Test-set metrics (generated vs real, test split only)\n",
        _table_md(metrics),
    ]
    for title, rows in extra.items():
        md += [f"## {title}\n", _table_md(rows)]
    if intensity is not None:
        unit, rows = intensity
        md += ["## Per-class intensity (generated vs real)\n", INTENSITY_NOTE.format(unit=_unit_phrase(unit)) + "\n",
               _table_md(rows, _flagged)]
    for title, path in rel.items():
        md += [f"## {title}\n", f"![{title}]({path})\n"]
    for title, note in (notes or {}).items():
        md += [f"## {title}\n", f"{note}\n"]
    Path(md_path).write_text("\n".join(md))
    Path(html_path).write_text(_page(experiment, selected, metrics, extra, intensity, rel, notes or {}))


def _page(experiment: str, selected: dict, metrics: list[dict], extra: Mapping[str, list[dict]],
          intensity: tuple[str, list[dict]] | None, figures: Mapping[str, Path], notes: Mapping[str, str]) -> str:
    tables_html = "".join(f"<h2>{html.escape(t)}</h2>{_table_html(r)}" for t, r in extra.items())
    if intensity is not None:
        unit, rows = intensity
        note = INTENSITY_NOTE.format(unit=_unit_phrase(unit)) + " Flagged rows are highlighted."
        tables_html += (f"<h2>Per-class intensity (generated vs real)</h2><p>{html.escape(note)}</p>"
                        f"{_table_html(rows, _flagged)}")
    figs = "".join(
        f"<h2>{html.escape(t)}</h2><img src='{html.escape(str(p))}' style='max-width:100%'>" for t, p in figures.items()
    ) + "".join(f"<h2>{html.escape(t)}</h2><p>{html.escape(n)}</p>" for t, n in notes.items())
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>medsynth {html.escape(experiment)}</title></head><body>"
        f"<h1>medsynth experiment <code>{html.escape(experiment)}</code></h1>"
        f"<p>Selected checkpoint: step <b>{selected['step']}</b>, {html.escape(selected['reason'])}.</p>"
        f"<h2>Test-set metrics</h2>{_table_html(metrics)}{tables_html}"
        f"{figs}</body></html>"
    )
