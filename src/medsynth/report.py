"""A short human summary of one experiment: markdown and a self-contained HTML page."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Mapping

from medsynth.io.tables import read_tsv


def _table_md(rows: list[dict]) -> str:
    if not rows:
        return "_no rows_\n"
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r[c]) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def _fmt(value: str) -> str:
    try:
        f = float(value)
    except ValueError:
        return value
    return value if f.is_integer() and "." not in value else f"{f:.4g}"


def write_summary(
    experiment: str,
    selected_json: Path,
    test_metrics_tsv: Path,
    figures: Mapping[str, Path],
    md_path: Path,
    html_path: Path,
    tables: Mapping[str, Path] | None = None,
) -> None:
    selected = json.loads(Path(selected_json).read_text())
    metrics = read_tsv(test_metrics_tsv)
    extra = {title: read_tsv(p) for title, p in (tables or {}).items()}
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
    for title, path in rel.items():
        md += [f"## {title}\n", f"![{title}]({path})\n"]
    Path(md_path).write_text("\n".join(md))

    def table_html(rows: list[dict]) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in (rows[0] if rows else []))
        body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(r[c]))}</td>" for c in r) + "</tr>" for r in rows)
        return f"<table border='1' cellpadding='4'><tr>{head}</tr>{body}</table>"

    tables_html = "".join(f"<h2>{html.escape(t)}</h2>{table_html(r)}" for t, r in extra.items())
    figs = "".join(
        f"<h2>{html.escape(t)}</h2><img src='{html.escape(str(p))}' style='max-width:100%'>" for t, p in rel.items()
    )
    Path(html_path).write_text(
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>medsynth {html.escape(experiment)}</title></head><body>"
        f"<h1>medsynth experiment <code>{html.escape(experiment)}</code></h1>"
        f"<p>Selected checkpoint: step <b>{selected['step']}</b>, {html.escape(selected['reason'])}.</p>"
        f"<h2>Test-set metrics</h2>{table_html(metrics)}{tables_html}"
        f"{figs}</body></html>"
    )
