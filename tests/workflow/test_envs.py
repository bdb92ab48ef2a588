"""Conda users get the same versions as pip users."""

import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def test_conda_env_pins_agree_with_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    env = yaml.safe_load((REPO / "workflow/envs/medsynth.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    pins = [p for p in pip if not p.startswith("-e")]
    assert sorted(pins) == sorted(project)
    assert any(p.startswith("-e") for p in pip)  # the package itself, from this checkout


def test_every_rule_names_the_conda_env():
    for smk in sorted((REPO / "workflow/rules").glob("*.smk")):
        text = smk.read_text()
        rules = text.count("\nrule ") + text.count("\ncheckpoint ") + text.startswith("rule ")
        assert text.count("conda:") == rules, smk.name
