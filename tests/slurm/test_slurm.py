"""The workflow through profiles/slurm on a real single-node SLURM (started by start-local-slurm.sh)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from medsynth.io.tables import read_tsv

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
LABELS = [{"name": n, "values": [i]} for i, n in enumerate(
    ["background", "body", "muscle", "liver", "spleen", "kidney", "lung", "bone", "aorta", "bowel_gas"])]
CONFIG = {
    "datasets": {
        "phantom": {
            "source": "phantom", "modality": "CT", "labels": LABELS, "preprocess": {"spacing_xy": 12.0},
            "phantom": {"n_cases": 4, "seed": 1, "shape": [64, 64, 10], "spacing": [6.0, 6.0, 8.0]}},
        # Only preprocessed and sliced (no experiment uses it): 40 cases in one job. One job, not two: on
        # the test's 2 CPUs, two would hold both for a minute and the training's chain would wait.
        "cohort": {
            "source": "phantom", "modality": "CT", "labels": LABELS, "preprocess": {"spacing_xy": 12.0},
            "phantom": {"n_cases": 40, "seed": 2, "shape": [32, 32, 8], "spacing": [12.0, 12.0, 8.0]}}},
    "cluster": {"cases_per_job": 40},
    "slice": {"size": 32},
    "split": {"seed": 0, "ratios": {"train": 0.5, "val": 0.25, "test": 0.25}},
    # CPUs are the rules' threads: 1 for the training and the metrics as before on the test's 2 CPUs;
    # 2 for generation, whose job is checked for them.
    "experiments": {"tiny": {"dataset": "phantom", "gpus": 2, "threads": 1, "train": {
        "steps": 12, "batch_size": 2, "eval_every": 6, "sample_every": 6, "checkpoint_every": 6,
        "device": "auto", "val_max_slices": 4}}},  # auto: the CPU here (gpus: 2 with cpu is refused)
    "metrics": {"perceptual": "off", "segmenter_steps": 10, "segmenter_threads": 1, "threads": 1},
    "generate": {"threads": 2},
    "report": {"dpi": 50, "grid_rows": 3},
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("the local SLURM cluster needs root (apt-get and the daemons)")
    state = tmp_path_factory.mktemp("slurm-state")
    env = {**os.environ, "MEDSYNTH_SLURM_STATE": str(state)}
    try:
        started = subprocess.run(["bash", str(HERE / "start-local-slurm.sh")], env=env, capture_output=True,
                                 text=True, timeout=600)
        assert started.returncode == 0, started.stdout + started.stderr
        yield env
    finally:
        subprocess.run(["bash", str(HERE / "stop-local-slurm.sh")], env=env, timeout=120)


@pytest.mark.slow
@pytest.mark.slurm
def test_workflow_runs_through_the_slurm_profile(cluster, tmp_path):
    """The whole workflow as SLURM jobs: the per-case jobs in one job per batch of cases, sized as
    their sequence; the training as one task with 2 GPUs, run as 2 torchrun workers, stopped at its
    one-minute time limit and resumed by Snakemake's retry."""
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    marker = tmp_path / "stop-signal-received"
    env = {**cluster, "PYTHONPATH": os.pathsep.join([str(HERE / "slow_training"), cluster.get("PYTHONPATH", "")]),
           "MEDSYNTH_TEST_STEP_SECONDS": "15", "MEDSYNTH_TEST_STOP_MARKER": str(marker)}
    # The test overlay is given as the workflow profile: its keys replace the main profile's
    # (status command, check interval, the test cluster's partitions and small resources).
    # Snakemake itself, but for the plugin's back-off between status checks (steady_status_checks.py).
    cmd = ["timeout", "-s", "INT", "900", sys.executable, str(HERE / "steady_status_checks.py"),
           "--snakefile", str(REPO / "workflow" / "Snakefile"),
           "--profile", str(REPO / "profiles/slurm"), "--workflow-profile", str(HERE / "profile"),
           "--configfile", "config.yaml"]
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1000)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for path in ("results/evaluate/tiny/test_metrics.tsv", "reports/tiny/summary.md", "reports/tiny/samples.png",
                 "results/select/tiny/selected.json"):
        assert (tmp_path / path).is_file(), path

    # Every job went through SLURM; the training to the GPU partition with 2 GPUs and the time-limit signal.
    jobs = subprocess.run(["squeue", "--states=all", "-h", "-o", "%i|%P|%k|%T"], capture_output=True, text=True,
                          check=True).stdout.split()
    train = sorted((j.split("|") for j in jobs if "rule_train_" in j), key=lambda j: int(j[0]))
    assert len(train) >= 2 and all(j[1] == "gpu" for j in train), jobs  # stopped at the limit, then resumed
    detail = subprocess.run(["scontrol", "show", "job", train[0][0]], capture_output=True, text=True).stdout
    assert "gres:gpu:2" in detail or "gres/gpu=2" in detail, detail
    assert "NumTasks=1 " in detail and "NumCPUs=1 " in detail, detail  # one task with both GPUs: torchrun
    # starts the workers; its CPUs are experiments.tiny.threads (no cpus_per_task in the profiles).
    assert "TimeLimit=00:01:00" in detail, detail
    states = [j[3] for j in train]
    assert "TIMEOUT" in states and states[-1] == "COMPLETED", states

    # Generation asks for its threads' CPUs (generate.threads: 2), the count its torch runs with.
    ids = [j.split("|")[0] for j in jobs if j.split("|")[2].startswith("rule_generate_")]
    detail = subprocess.run(["scontrol", "show", "job", ids[-1]], capture_output=True, text=True).stdout
    assert "NumCPUs=2 " in detail and "Partition=gpu " in detail, detail
    # Partitions follow the GPUs a job asks for (the profile's partitions file): the real statistics without
    # Inception (perceptual off) ask for none and go to the CPU partition, beside the batches of cases.
    stats = [j.split("|") for j in jobs if j.split("|")[2].startswith("rule_real_stats_")]
    assert stats and all(j[1] == "cpu" for j in stats), jobs

    # Segmentation consistency's U-Net on one GPU: the experiment trains on GPUs.
    ids = [j.split("|")[0] for j in jobs if j.split("|")[2].startswith("rule_segmenter_")]
    assert len(ids) == 1, jobs
    detail = subprocess.run(["scontrol", "show", "job", ids[0]], capture_output=True, text=True).stdout
    assert "Partition=gpu " in detail and ("gres:gpu:1" in detail or "gres/gpu=1" in detail), detail

    # The 44 cases' preprocessing and slicing: 2 SLURM jobs (4 cases; 40), none per case.
    assert not any(j.split("|")[2].startswith(("rule_preprocess_", "rule_slice_")) for j in jobs), jobs
    batches = [j.split("|") for j in jobs if j.split("|")[2] == "rule_cases_preprocess_slice_slice_batch"]
    assert len(batches) == 2 and all(b[1] == "cpu" and b[3] == "COMPLETED" for b in batches), jobs
    tables = {p.relative_to(tmp_path).as_posix(): [r["case_id"] for r in read_tsv(p)]
              for p in tmp_path.glob("results/slices/*/batches/*.tsv")}
    assert tables == {"results/slices/phantom/batches/000.tsv": [f"phantom_{i:03d}" for i in range(4)],
                      "results/slices/cohort/batches/000.tsv": [f"phantom_{i:03d}" for i in range(40)]}
    # Sized as the sequence its jobs run in: one job's memory (500 MB) and CPU (1), the time summed
    # (per case 1 min, its slicing's, and 1 min for the table; 3 min a case before, for seconds of work).
    limits = set()
    for job_id, *_ in batches:
        detail = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout
        assert "MinMemoryNode=500M" in detail and "NumCPUs=1 " in detail and "NumTasks=1 " in detail, detail
        limits.add(re.search(r"TimeLimit=(\S+)", detail).group(1))
    assert limits == {"00:05:00", "00:41:00"}, limits

    # A training job was stopped at its time limit, wrote a checkpoint and exited; a retry resumed from it.
    assert marker.exists()
    assert "training in 2 processes" in (tmp_path / "logs/train/tiny.log").read_text()
    jobs = read_tsv(tmp_path / "results/train/tiny/jobs.tsv")
    events = [(r["event"], int(r["step"])) for r in jobs]
    stops = [i for i, r in enumerate(jobs) if r["event"] == "stopped"]
    assert stops and int(jobs[stops[0]]["step"]) >= 1 and jobs[stops[0]]["detail"].startswith("SIGTERM"), jobs
    assert ("resumed", int(jobs[stops[0]]["step"])) in events[stops[0]:], events
    assert events[-1] == ("finished", 12), events
    assert all(r["processes"] == "2" for r in jobs), jobs
    assert len({r["slurm_job_id"] for r in jobs}) >= 2 and all(r["slurm_job_id"] for r in jobs), jobs
    steps = [int(r["step"]) for r in read_tsv(tmp_path / "results/train/tiny/losses.tsv")]
    assert steps == list(range(1, 13)), steps  # every step once across the jobs
    assert shutil.which("sbatch")

