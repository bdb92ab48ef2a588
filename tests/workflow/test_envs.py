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


def _installed_closure(requirements: list[str]) -> set[str]:
    """The distributions a list of requirements installs, as far as this environment's metadata tells
    (no extras asked for)."""
    from importlib.metadata import PackageNotFoundError, distribution

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    seen: set[str] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in seen or (req.marker is not None and not req.marker.evaluate({"extra": ""})):
            continue
        seen.add(name)
        try:
            todo += [Requirement(r) for r in distribution(name).requires or []]
        except PackageNotFoundError:
            continue
    return seen


def test_a_local_install_has_no_executor_plugin_nor_pandas():
    """Snakemake imports every executor plugin installed, at every start, and its params check imports
    pandas if it is there: 0.3-0.4 s of each `snakemake` call. The SLURM executor is the extra "slurm"."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    closure = _installed_closure(pyproject["dependencies"])
    assert "snakemake" in closure and "numpy" in closure  # the walk follows the metadata
    assert not {"pandas", "snakemake-executor-plugin-slurm"} & closure
    assert pyproject["optional-dependencies"]["slurm"] == ["snakemake-executor-plugin-slurm>=2,<3"]
    assert "snakemake-executor-plugin-slurm>=2,<3" in pyproject["optional-dependencies"]["dev"]
