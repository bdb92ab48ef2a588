"""Write docs/reference/config.md and workflow/schemas/config.schema.json from workflow/schemas/config.schema.yaml.

    python docs/config_reference.py            # (re)write the page and the JSON schema
    python docs/config_reference.py --check    # exit 1 when either is out of date

The JSON schema is the YAML one as JSON: it is what Snakemake validates with at every start, since it
reads JSON in a millisecond and this YAML (pure-Python parser) in 0.15 s, which every per-case job of a
cohort would pay again. Edit the YAML; both files are generated from it.

The page lists every key path of the schema (``datasets.<name>.preprocess.ct_window``,
``experiments.<name>.train.steps``, ``datasets.<name>.labels[].name``) with its type, default,
allowed values and the schema's description, one section per top-level key, in schema order.
Keys without a description are listed on stderr so that someone can write one. Needs only PyYAML.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
OUTPUT = REPO / "docs" / "reference" / "config.md"
SCHEMA_JSON = REPO / "workflow" / "schemas" / "config.schema.json"
COMMAND = "python docs/config_reference.py"

# Map keys (additionalProperties) are shown with this placeholder, named by the section.
PLACEHOLDER = {"datasets": "<name>", "experiments": "<name>"}


@dataclass
class Row:
    path: str
    type: str
    default: str
    allowed: str
    description: str
    named: bool = True  # a key a user writes (not a map placeholder such as datasets.<name>)


@dataclass
class Section:
    key: str
    description: str
    rows: list[Row] = field(default_factory=list)


def one_line(text: object) -> str:
    return " ".join(str(text).split()) if text is not None else ""


def literal(value: object) -> str:
    """A YAML/JSON value as it would be written in a config."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def code(value: object) -> str:
    return "`" + literal(value).replace("|", "\\|") + "`"


def prose(text: str) -> str:
    """Schema text for Markdown: one line; outside code spans ``<`` and ``>`` as entities, so that
    ``results/<stage>/`` is not taken for an HTML tag."""
    out, in_code = [], False
    for ch in one_line(text):
        if ch == "`":
            in_code = not in_code
        elif not in_code and ch in "<>":
            ch = "&lt;" if ch == "<" else "&gt;"
        out.append(ch)
    return "".join(out)


def cell(text: str) -> str:
    """Text for a Markdown table cell: as ``prose``, with pipes escaped (inside code spans too)."""
    out = []
    for ch in prose(text):
        if ch == "|" and not (out and out[-1] == "\\"):
            out.append("\\")
        out.append(ch)
    return "".join(out)


def type_name(node: dict) -> str:
    types = node.get("type")
    if types is None and "enum" in node:
        kinds = []
        for value in node["enum"]:
            kind = {bool: "boolean", int: "integer", float: "number", str: "string"}.get(type(value), "value")
            if value is None:
                kind = "null"
            if kind not in kinds:
                kinds.append(kind)
        types = kinds
    if types is None:
        types = ["object"] if ("properties" in node or "additionalProperties" in node) else []
    if isinstance(types, str):
        types = [types]
    names = []
    for kind in types:
        if kind == "array" and isinstance(node.get("items"), dict):
            item = type_name(node["items"])
            names.append(f"list of {item}" if item else "list")
        elif kind == "array":
            names.append("list")
        else:
            names.append(kind)
    return " or ".join(names)


def bounds(node: dict) -> list[str]:
    parts = []
    for key, sign in (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"), ("exclusiveMaximum", "<")):
        if key in node:
            parts.append(f"{sign} {literal(node[key])}")
    return parts


def constraints(node: dict, required: bool) -> str:
    parts = []
    if required:
        parts.append("**required**")
    if "enum" in node:
        parts.append("one of " + ", ".join(code(v) for v in node["enum"]))
    parts += bounds(node)
    if "pattern" in node:
        parts.append("matches " + code(node["pattern"]))
    if node.get("minLength") == 1:
        parts.append("non-empty")
    elif "minLength" in node:
        parts.append(f"at least {node['minLength']} characters")
    lo, hi = node.get("minItems"), node.get("maxItems")
    if lo is not None and lo == hi:
        parts.append(f"exactly {lo} items")
    elif lo is not None and hi is not None:
        parts.append(f"{lo}–{hi} items")
    elif lo is not None:
        parts.append(f"at least {lo} item" + ("s" if lo != 1 else ""))
    elif hi is not None:
        parts.append(f"at most {hi} items")
    if node.get("uniqueItems"):
        parts.append("no repeats")
    items = node.get("items")
    if isinstance(items, dict) and "properties" not in items:
        if "enum" in items:
            parts.append("each one of " + ", ".join(code(v) for v in items["enum"]))
        parts += [f"each {b}" for b in bounds(items)]
    if "minProperties" in node:
        n = node["minProperties"]
        parts.append(f"at least {n} entr" + ("y" if n == 1 else "ies"))
    if node.get("required") and "properties" in node:
        parts.append("needs " + ", ".join(code(k) for k in node["required"]))
    for key, word in (("oneOf", "exactly one of"), ("anyOf", "at least one of")):
        choices = node.get(key) or []
        if choices and all(set(c) == {"required"} for c in choices):
            parts.append(word + " " + ", ".join(" + ".join(code(k) for k in c["required"]) for c in choices))
    return "; ".join(parts)


def default_of(node: dict) -> str:
    if "default" not in node:
        return ""
    value = node["default"]
    if value == {} and "properties" in node:
        return ""  # an object filled in from its keys' defaults
    return code(value)


def walk(node: dict, path: str, rows: list[Row], required: bool = False, named: bool = True) -> None:
    """Append a row for the key at ``path`` and for every key below it, in schema order."""
    rows.append(Row(path, type_name(node), default_of(node), constraints(node, required),
                    one_line(node.get("description")), named))
    needed = set(node.get("required") or [])
    for key, child in (node.get("properties") or {}).items():
        walk(child, f"{path}.{key}", rows, key in needed)
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        placeholder = PLACEHOLDER.get(path.split(".")[-1], "<key>")
        walk(extra, f"{path}.{placeholder}", rows, named=False)
    items = node.get("items")
    if isinstance(items, dict) and "properties" in items:
        needed = set(items.get("required") or [])
        for key, child in items["properties"].items():
            walk(child, f"{path}[].{key}", rows, key in needed)


def sections(schema: dict) -> list[Section]:
    out = []
    needed = set(schema.get("required") or [])
    for key, node in (schema.get("properties") or {}).items():
        section = Section(key, one_line(node.get("description")))
        walk(node, key, section.rows, key in needed)
        out.append(section)
    return out


def anchor(key: str) -> str:
    return key.lower()


def render(schema: dict, schema_path: str = "workflow/schemas/config.schema.yaml") -> str:
    parts = sections(schema)
    lines = [
        "# Configuration reference",
        "",
        f"<!-- Generated by `{COMMAND}` from `{schema_path}`; do not edit by hand. -->",
        "",
        f"Every key of a medsynth config, generated from `{schema_path}`. "
        + prose(schema.get("description")),
        "",
        "A config is validated against this schema before any job runs (defaults filled in), then",
        "checked by medsynth's own rules (label tables, slice size against the model preset, image-only",
        "datasets, no test patient in anything shared). `<name>` stands for a name you choose (a dataset",
        "or an experiment); `labels[]` for each entry of a label table. An empty description means the",
        "schema has none yet. What each setting reruns: [What reruns when you change a setting](reruns.md);",
        "how the sections fit together: [Configuration](../explanation/configuration.md).",
        "",
        "Top-level keys: " + ", ".join(f"[`{s.key}`](#{anchor(s.key)})" for s in parts) + ".",
        "",
    ]
    for section in parts:
        lines += [f"## {section.key}", ""]
        if section.description:
            lines += [prose(section.description), ""]
        lines += ["| key | type | default | allowed | description |", "|---|---|---|---|---|"]
        for row in section.rows:
            lines.append("| " + " | ".join(cell(x) for x in (
                f"`{row.path}`", row.type, row.default, row.allowed, row.description)) + " |")
        lines.append("")
    return "\n".join(lines)


def undocumented(schema: dict) -> list[str]:
    return [row.path for s in sections(schema) for row in s.rows if row.named and not row.description]


KEYWORDS = {
    "$schema", "type", "default", "description", "enum", "minimum", "maximum", "exclusiveMinimum",
    "exclusiveMaximum", "pattern", "items", "minItems", "maxItems", "uniqueItems", "properties",
    "additionalProperties", "required", "oneOf", "anyOf", "allOf", "minLength", "maxLength",
    "minProperties", "maxProperties", "const", "title", "examples",
}


def stray_keywords(node: object, path: str = "") -> list[str]:
    """Words the schema holds where a keyword belongs: in a flow mapping ``{description: a, b}``
    YAML reads ``b`` as a key of its own and the description ends at the comma."""
    out = []
    if not isinstance(node, dict):
        return out
    for key, value in node.items():
        if key == "properties":
            for name, child in value.items():
                out += stray_keywords(child, f"{path}.{name}".lstrip("."))
        elif key == "additionalProperties":
            out += stray_keywords(value, f"{path}.{PLACEHOLDER.get(path.split('.')[-1], '<key>')}")
        elif key == "items":
            out += stray_keywords(value, f"{path}[]")
        elif key not in KEYWORDS:
            out.append(f"{path or '(root)'}: {key!r}")
    return out


def as_json(schema: dict, schema_path: str = "workflow/schemas/config.schema.yaml") -> str:
    """The schema as JSON, saying where it comes from (``$comment`` is a JSON Schema keyword validators skip)."""
    note = {"$comment": f"Generated by `{COMMAND}` from {schema_path}; edit that file, not this one."}
    return json.dumps({**note, **schema}, indent=1, ensure_ascii=False) + "\n"


def shown_path(path: Path) -> str:
    try:
        return path.resolve().relative_to(REPO).as_posix()
    except ValueError:
        return path.as_posix()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the page differs from what would be written")
    parser.add_argument("--schema", type=Path, default=SCHEMA, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, default=OUTPUT, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, default=SCHEMA_JSON, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    schema = yaml.safe_load(args.schema.read_text(encoding="utf-8"))
    outputs = {args.output: render(schema, shown_path(args.schema)),
               args.json: as_json(schema, shown_path(args.schema))}

    if args.check:
        stale = [shown_path(path) for path, text in outputs.items()
                 if not path.exists() or path.read_text(encoding="utf-8") != text]
        for name in stale:
            print(f"{name} is out of date: run {COMMAND}", file=sys.stderr)
        return 1 if stale else 0

    missing = undocumented(schema)
    if missing:
        print(f"{len(missing)} schema keys have no description:", file=sys.stderr)
        for path in missing:
            print(f"  {path}", file=sys.stderr)
    stray = stray_keywords(schema)
    if stray:
        print(f"{len(stray)} unknown schema keywords (a comma in a flow-mapping description?):", file=sys.stderr)
        for entry in stray:
            print(f"  {entry}", file=sys.stderr)
    for path, text in outputs.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8", newline="\n")
        print(f"wrote {shown_path(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
