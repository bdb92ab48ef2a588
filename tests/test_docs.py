"""The documentation: README.md is a front page, every relative link and image of README.md and
docs/ resolves, the pages the docs set promises exist, and the generated configuration reference
matches workflow/schemas/config.schema.yaml. Fast: no network, no workflow run."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
SCRIPT = DOCS / "config_reference.py"
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
CONFIG_MD = DOCS / "reference" / "config.md"

PAGES = [
    "docs/index.md",
    "docs/getting-started.md",
    "docs/how-to/your-own-data.md",
    "docs/how-to/dicom.md",
    "docs/how-to/unpaired.md",
    "docs/how-to/slurm-and-gpus.md",
    "docs/how-to/fine-tune-and-share.md",
    "docs/how-to/nnunet-export.md",
    "docs/how-to/utility-benchmark.md",
    "docs/reference/outputs.md",
    "docs/reference/metrics.md",
    "docs/reference/config.md",
    "docs/reference/reruns.md",
    "docs/explanation/model-and-training.md",
    "docs/explanation/configuration.md",
    "docs/architecture.md",
    "docs/benchmarks.md",
    "docs/development.md",
]

LINK = re.compile(r"\]\(([^)]+)\)")          # [text](target) and ![alt](target)
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`[^`\n]*`")


def markdown_files() -> list[Path]:
    return [REPO / "README.md", *sorted(DOCS.rglob("*.md"))]


def link_targets(text: str) -> list[str]:
    """Link and image targets of a Markdown text, outside code blocks and code spans."""
    text = CODE_SPAN.sub("", FENCE.sub("", text))
    targets = []
    for raw in LINK.findall(text):
        target = raw.strip().split()[0] if raw.strip() else raw  # drop a "title"
        targets.append(target.strip("<>"))
    return targets


def broken_links(page: Path) -> list[str]:
    """Relative links of ``page`` whose file does not exist (http(s), mailto and #anchors skipped)."""
    broken = []
    for target in link_targets(page.read_text(encoding="utf-8")):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) or target.startswith("#"):
            continue
        path = target.split("#", 1)[0].split("?", 1)[0]
        if not path or not (page.parent / path).exists():
            broken.append(target)
    return broken


def schema_paths(node: dict, path: str) -> list[str]:
    """Every key path below ``node``, written as the reference writes them."""
    out = []
    for key, child in (node.get("properties") or {}).items():
        out.append(f"{path}.{key}".lstrip("."))
        out += schema_paths(child, f"{path}.{key}".lstrip("."))
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        out.append(f"{path}.<name>")
        out += schema_paths(extra, f"{path}.<name>")
    items = node.get("items")
    if isinstance(items, dict) and "properties" in items:
        out += schema_paths(items, f"{path}[]")
    return out


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=REPO,
                          timeout=60)


# ---------------------------------------------------------------- the configuration reference

def test_config_reference_is_current():
    result = run_script("--check")
    assert result.returncode == 0, result.stderr


def test_config_reference_check_fails_on_a_stale_page(tmp_path):
    stale = tmp_path / "config.md"
    stale.write_text(CONFIG_MD.read_text(encoding="utf-8").replace("`slice.size`", "`slice.sise`"), encoding="utf-8")
    result = run_script("--check", "--output", str(stale))
    assert result.returncode == 1
    assert "is out of date: run python docs/config_reference.py" in result.stderr
    missing = run_script("--check", "--output", str(tmp_path / "absent.md"))
    assert missing.returncode == 1


def test_the_json_schema_is_the_yaml_one_and_a_stale_one_fails_the_check(tmp_path):
    """Snakemake and medsynth validate with the JSON twin; it must say what the YAML people edit says."""
    import json

    twin = json.loads((REPO / "workflow" / "schemas" / "config.schema.json").read_text(encoding="utf-8"))
    assert twin.pop("$comment").endswith("edit that file, not this one.")
    assert twin == yaml.safe_load(SCHEMA.read_text(encoding="utf-8"))
    stale = tmp_path / "config.schema.json"
    stale.write_text(json.dumps({**twin, "required": []}), encoding="utf-8")
    result = run_script("--check", "--json", str(stale))
    assert result.returncode == 1
    assert f"{stale.as_posix()} is out of date" in result.stderr


def test_config_reference_lists_every_key_path():
    text = CONFIG_MD.read_text(encoding="utf-8")
    schema = yaml.safe_load(SCHEMA.read_text(encoding="utf-8"))
    paths = schema_paths(schema, "")
    for known in ("slice.size", "experiments.<name>.train.steps", "datasets.<name>.labels",
                  "datasets.<name>.preprocess.ct_window", "datasets.<name>.labels[].values", "cluster.cases_per_job"):
        assert known in paths
    missing = [p for p in paths if f"`{p}`" not in text]
    assert not missing, f"docs/reference/config.md lacks {missing}"
    for key in schema["properties"]:
        assert f"\n## {key}\n" in text, f"no section for {key}"


def test_config_reference_shows_defaults_and_allowed_values():
    text = CONFIG_MD.read_text(encoding="utf-8")
    row = next(line for line in text.splitlines() if line.startswith("| `experiments.<name>.train.mode` |"))
    assert "`paired`" in row and "`unpaired`" in row
    row = next(line for line in text.splitlines() if line.startswith("| `slice.size` |"))
    assert "`64`" in row and "≥ 16" in row


# ---------------------------------------------------------------- the pages

def test_readme_is_a_front_page():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines: move detail into docs/"


@pytest.mark.parametrize("page", PAGES)
def test_page_exists(page):
    assert (REPO / page).is_file(), f"{page} is missing"


def test_readme_links_every_docs_page():
    targets = {t.split("#", 1)[0] for t in link_targets((REPO / "README.md").read_text(encoding="utf-8"))}
    index = {("docs/" + t.split("#", 1)[0]) for t in link_targets((DOCS / "index.md").read_text(encoding="utf-8"))}
    for page in PAGES:
        assert page in targets or page in index, f"{page} is linked neither from README.md nor docs/index.md"


@pytest.mark.parametrize("page", markdown_files(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_relative_links_resolve(page):
    assert not broken_links(page), f"{page.relative_to(REPO)}: broken links {broken_links(page)}"


def test_broken_links_are_found(tmp_path):
    (tmp_path / "there.md").write_text("x")
    page = tmp_path / "page.md"
    page.write_text("[ok](there.md#a) [bad](missing.md) ![img](figs/none.png) [web](https://x.org/y)\n"
                    "[anchor](#here) `[code](nope.md)`\n```\n[fenced](nope.md)\n```\n")
    assert broken_links(page) == ["missing.md", "figs/none.png"]


def test_every_figure_is_shown():
    shown = set()
    for page in markdown_files():
        for target in link_targets(page.read_text(encoding="utf-8")):
            shown.add((page.parent / target.split("#", 1)[0]).resolve())
    figures = sorted((DOCS / "figures").glob("*.png"))
    assert figures
    unshown = [f.name for f in figures if f.resolve() not in shown]
    assert not unshown, f"figures referenced by no page: {unshown}"
