"""Run the workflow as a user does: the snakemake command line in a scratch working directory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tiny_workflow import no_controller_env

REPO = Path(__file__).resolve().parents[2]


def run_snakemake(workdir: Path, config: dict, *args: str) -> subprocess.CompletedProcess:
    cfg = workdir / "config.yaml"
    cfg.write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "workflow" / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(cfg), "--cores", "2", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=1200, env=no_controller_env())


@pytest.fixture(scope="session")
def snakemake():
    return run_snakemake


@pytest.fixture(scope="session")
def finished(tmp_path_factory, snakemake, random_weights_dir):
    """The tiny workflow run to the end once per session (the slow tests look at it and dry-run on it)."""
    from tiny_workflow import TINY, label_only_cohort, test_map_copy

    work = tmp_path_factory.mktemp("workflow")
    TINY["metrics"]["weights_dir"] = str(random_weights_dir)
    TINY["datasets"]["labels_only"]["local"]["root"] = str(label_only_cohort(work / "label_maps"))
    # The phantom downloaded first: labels_only gets a copy of its test case's label map (test_map_copy).
    result = snakemake(work, TINY, "resources/raw/phantom/cases.tsv")
    assert result.returncode == 0, result.stderr[-4000:]
    test_map_copy(work / "resources/raw/phantom/cases.tsv", work / "label_maps")
    result = snakemake(work, TINY)
    assert result.returncode == 0, result.stderr[-4000:]
    return work
