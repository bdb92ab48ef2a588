"""What profiles/slurm makes of the rules' resources (a dry run: no cluster needed)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tiny_workflow import no_controller_env

REPO = Path(__file__).resolve().parents[2]


def _job_resources(workdir: Path, config: dict, rule: str) -> dict[str, str]:
    shutil.copytree(REPO / "config", workdir / "config")  # the label table path is relative to the run folder
    (workdir / "run.yaml").write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "-n",
           "--workflow-profile", str(REPO / "profiles/slurm"), "--configfile", "run.yaml"]
    result = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=300, env=no_controller_env())
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    block = re.search(rf"^rule {rule}:\n(.*?)\n\n", result.stdout, re.S | re.M)
    assert block, result.stdout[-3000:]
    line = re.search(r"resources: (.*)", block.group(1)).group(1)
    return dict(item.split("=", 1) for item in line.split(", "))


@pytest.mark.parametrize("gpus", [1, 4])
def test_training_job_asks_for_the_experiments_gpus_memory_and_time_limit_warning(tmp_path, gpus):
    config = yaml.safe_load((REPO / "config/autopet.yaml").read_text())
    config["experiments"]["autopet-paired"]["gpus"] = gpus
    res = _job_resources(tmp_path, config, "train")
    assert res["gpu"] == str(gpus)  # the rule's own value: the profile does not override it
    ram_gb = config["experiments"]["autopet-paired"]["train"].get("ram_cache_gb", 32)
    assert int(res["mem_mb"]) == (1000 * ram_gb + 8000) * gpus  # each process holds its own slices
    assert res["slurm_partition"] == "CHANGE_ME_gpu" and res["slurm_account"] == "CHANGE_ME_account"
    assert res["runtime"] == "1440" and res["slurm_extra"] == "--signal=USR1@300"


def test_partitions_and_accounts_live_only_in_the_profile():
    for smk in sorted((REPO / "workflow/rules").glob("*.smk")):
        text = smk.read_text()
        assert "slurm_" not in text and "partition" not in text, smk.name
