"""What profiles/slurm makes of the rules' resources (a dry run: no cluster needed)."""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from tiny_workflow import TINY, no_controller_env, planned_jobs

REPO = Path(__file__).resolve().parents[2]


def _job_resources(workdir: Path, config: dict, rules: tuple[str, ...],
                   first: tuple[str, ...] = ()) -> dict[str, dict[str, str]]:
    """The resources of each rule's first job in one dry run through the profile; ``first``: targets made
    before it (locally), e.g. the split, after which the jobs that read a split enter the plan."""
    shutil.copytree(REPO / "config", workdir / "config")  # the label table path is relative to the run folder
    (workdir / "run.yaml").write_text(yaml.safe_dump(config))
    base = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "workflow" / "Snakefile"),
            "--configfile", "run.yaml"]
    for args in ([["--cores", "2", *first]] if first else []) + [["-n", "--workflow-profile", str(REPO / "profiles/slurm")]]:
        result = subprocess.run([*base, *args], cwd=workdir, capture_output=True, text=True, timeout=300,
                                env=no_controller_env())
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    found = {}
    for rule in rules:
        block = re.search(rf"^rule {rule}:\n(.*?)\n\n", result.stdout, re.S | re.M)
        assert block, (rule, result.stdout[-3000:])
        line = re.search(r"resources: (.*)", block.group(1)).group(1)
        found[rule] = dict(item.split("=", 1) for item in line.split(", "))
    return found


class _Resources(dict):
    __getattr__ = dict.__getitem__


def _snakemake_in(workdir: Path, config: dict):
    """A function running Snakemake on ``config`` in ``workdir`` (no SLURM controller) and returning its stdout."""
    (workdir / "run.yaml").write_text(yaml.safe_dump(config))
    base = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "workflow" / "Snakefile"), "--configfile", "run.yaml"]

    def run(*args: str) -> str:
        result = subprocess.run([*base, *args], cwd=workdir, capture_output=True, text=True, timeout=300,
                                env=no_controller_env())
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return result.stdout
    return run


def _partition(res: dict[str, str]) -> str | None:
    """The partition the SLURM plugin picks for a job of these resources from the profile's partitions file
    (its dynamic selection, as at submission: a dry run does not show it)."""
    from snakemake_executor_plugin_slurm.partitions import get_best_partition, read_partition_file

    profile = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())
    partitions = read_partition_file(REPO / "profiles/slurm" / profile["slurm-partition-config"])
    values = {k: int(v) if v.isdigit() else v for k, v in res.items()}
    job = SimpleNamespace(resources=_Resources(values), threads=1, name="job")
    return get_best_partition(partitions, job, logging.getLogger(__name__))


@pytest.mark.parametrize("gpus", [0, 1, 4])
def test_training_job_asks_for_the_experiments_gpus_memory_and_time_limit_warning(tmp_path, gpus):
    config = yaml.safe_load((REPO / "config/autopet.yaml").read_text())
    config["experiments"]["autopet-paired"]["gpus"] = gpus
    res = _job_resources(tmp_path, config, ("train",))["train"]
    assert res["gpu"] == str(gpus)  # the rule's own value: the profile does not override it
    ram_gb = config["experiments"]["autopet-paired"]["train"].get("ram_cache_gb", 32)
    assert int(res["mem_mb"]) == (1000 * ram_gb + 8000) * max(gpus, 1)  # each process holds its own slices
    assert "slurm_partition" not in res and res["slurm_account"] == "CHANGE_ME_account"
    # A CPU-only training does not queue for GPU nodes; one with GPUs only where a node has as many.
    assert _partition(res) == ("CHANGE_ME_gpu" if gpus else "CHANGE_ME_cpu")
    assert res["runtime"] == "1440" and res["slurm_extra"] == "--signal=TERM@300"


def test_training_job_memory_follows_its_slices(tmp_path):
    """Each training process holds its train and val slices (images float16, labels, masks and the two
    neighbouring label maps of context_slices 1: 6 bytes a pixel) up to ram_cache_gb a set, and 8 GB for the
    networks: a cohort of a few MB asked for ram_cache_gb + 8 GB (40 GB a GPU) whatever its size."""
    from medsynth.io.npz import slices_in

    config = copy.deepcopy(TINY)
    del config["datasets"]["labels_only"], config["experiments"]["tiny"]["generate_from"]
    del config["experiments"]["tiny-unpaired"], config["datasets"]["phantom_mr"]
    config["experiments"]["tiny"]["gpus"] = 2
    config["experiments"]["tiny"]["train"]["device"] = "auto"  # gpus with device cpu is refused
    run = _snakemake_in(tmp_path, config)

    def train_mem_mb() -> int:
        block = re.search(r"^rule train:\n(.*?)\n\n", run("-n", "--workflow-profile", str(REPO / "profiles/slurm")), re.S | re.M)
        return int(re.search(r"mem_mb=(\d+)", block.group(1)).group(1))

    run("--cores", "2", "results/split/phantom/split.tsv")
    assert train_mem_mb() == (32000 + 8000) * 2  # a dry run before the slices: the budget
    rows = [r.split("\t") for r in (tmp_path / "results/split/phantom/split.tsv").read_text().splitlines()[1:]]
    files = [f"results/slices/phantom/cases/{r[0]}/slices.npz" for r in rows if r[-1] in ("train", "val")]
    run("--cores", "2", *files)
    n = slices_in([tmp_path / f for f in files])
    assert n and train_mem_mb() == int((n * 32 * 32 * 6 / 1e6 + 8000) * 2)


# A training as the rule's script runs it: the stop flag, then the step, validation and latest.pt (2 s).
_STOPPING_TRAINING = """
import sys, time
from pathlib import Path
from medsynth.train.signals import INTERRUPTED_EXIT, StopFlag
with StopFlag() as stop:
    Path("started").touch()
    while stop.signal is None:
        time.sleep(0.05)
    time.sleep(2)
    Path("latest.pt").write_text(str(stop.signal))
sys.exit(INTERRUPTED_EXIT)
"""


def test_the_time_limit_warning_leaves_the_training_its_checkpoint(tmp_path):
    """On SLURM a job runs as `srun ... snakemake --target-jobs ... --mode remote` (the job step), and the
    warning the profile asks for (--signal without B:) reaches every process of the step; once the step's
    task, that Snakemake, has ended, slurmstepd kills what is left. SIGUSR1 killed that Snakemake at once
    (no handler), and with it the training before its checkpoint: the signal must let it wait for the job."""
    profile = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())
    name = re.search(r"--signal=([A-Z0-9]+)@300", profile["set-resources"]["train"]["slurm_extra"]).group(1)
    (tmp_path / "Snakefile").write_text('rule train:\n    output: "done"\n    log: "train.log"\n    script: "train.py"\n')
    (tmp_path / "train.py").write_text(_STOPPING_TRAINING)
    step = [sys.executable, "-m", "snakemake", "--snakefile", "Snakefile", "--target-jobs", "train:", "--allowed-rules",
            "train", "--cores", "1", "--force", "--nolock", "--mode", "remote"]
    proc = subprocess.Popen(step, cwd=tmp_path, start_new_session=True, env=no_controller_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(1200):
            if (tmp_path / "started").exists() or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert (tmp_path / "started").exists(), "the job never started"
        os.killpg(proc.pid, signal.Signals[f"SIG{name}"])  # slurmstepd: every process of the step
        proc.wait(timeout=60)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # slurmstepd again: the step's task ended, the rest dies
        except ProcessLookupError:
            pass
    assert (tmp_path / "latest.pt").exists(), f"SIG{name} ended the step before the training's checkpoint"


def test_per_case_jobs_run_in_batches_of_cases_through_the_profile(tmp_path):
    """300 cases: their preprocessing and slicing in one group job per 100 cases (cluster.cases_per_job,
    default), each job taking its group's one slot (so Snakemake sizes the group as a sequence);
    without the profile nothing changes."""
    labels = [{"name": n, "values": [i]} for i, n in enumerate(["background", "body", "muscle", "liver", "spleen"])]
    config = {"datasets": {"phantom": {
        "source": "phantom", "modality": "CT", "labels": labels, "preprocess": {"spacing_xy": 12.0},
        "phantom": {"n_cases": 300, "seed": 1, "shape": [32, 32, 8], "spacing": [6.0, 6.0, 8.0]}}},
        "slice": {"size": 16}, "split": {"seed": 0, "ratios": {"train": 0.8, "val": 0.1, "test": 0.1}}}
    run = _snakemake_in(tmp_path, config)

    # The per-case jobs enter the DAG once the split is known: download and split here, with no cluster.
    run("--cores", "2", "results/split/phantom/split.tsv")
    dry = run("-n", "--workflow-profile", str(REPO / "profiles/slurm"))
    assert planned_jobs(subprocess.CompletedProcess([], 0, dry)) == {
        "preprocess": 300, "slice": 300, "slice_batch": 3, "oasis_view": 1, "all": 1}
    groups = dry.split("Group job cases (jobs in lexicogr. order):")[1:]
    assert len(groups) == 3  # at most 12 asked for: 2 submissions per case were 600
    for group in groups:
        jobs = re.findall(r"^    rule (\w+):\n(?:        .*\n)*?        resources: (.*)$", group, re.M)
        assert Counter(rule for rule, _ in jobs) == {"preprocess": 100, "slice": 100, "slice_batch": 1}
        assert all("group_slot=1" in res.split(", ") for _, res in jobs)
        # The batch's time limit, its jobs' run times summed: a minute a case (its slicing's) and one for the
        # table, not 3 a case (whole minutes for preprocessing and slicing) for ~12 s of work.
        minutes = Counter()
        for rule, res in jobs:
            minutes[rule] += int(dict(item.split("=", 1) for item in res.split(", "))["runtime"])
        assert minutes == {"preprocess": 0, "slice": 100, "slice_batch": 1}
    assert sorted(tmp_path.glob("results/slices/phantom/batches/*")) == []  # a dry run writes nothing

    local = run("-n", "--cores", "2")
    assert "Group job" not in local and "slice_batch" not in planned_jobs(subprocess.CompletedProcess([], 0, local))
    # Each case's jobs on their own (the groups deleted from the profile, or locally): their own time limits.
    for rule, minutes in (("preprocess", "2"), ("slice", "1")):
        block = re.search(rf"^rule {rule}:\n(?:    .*\n)*?    resources: (.*)$", local, re.M)
        assert dict(item.split("=", 1) for item in block.group(1).split(", "))["runtime"] == minutes, rule
    # And each fits beside a running training of the demo on its 2 cores (at 2 threads the MR cases waited
    # for the first training to end: priority cannot make a 2-thread job fit one free core).
    demo = yaml.safe_load((REPO / "config/config.yaml").read_text())
    free = 2 - max(e["threads"] for e in demo["experiments"].values())
    for rule in ("preprocess", "slice"):
        block = re.search(rf"^rule {rule}:\n((?:    .*\n)*)", local, re.M).group(1)
        threads = re.search(r"^    threads: (\d+)$", block, re.M)  # Snakemake leaves out threads: 1
        assert (int(threads.group(1)) if threads else 1) <= free, (rule, block)


def test_partitions_and_accounts_live_only_in_the_profile():
    for smk in sorted((REPO / "workflow/rules").glob("*.smk")):
        text = smk.read_text()
        assert "slurm_" not in text and "partition" not in text, smk.name


@pytest.mark.parametrize("gpus", [0, 2])
def test_segmenters_run_on_a_gpu_when_the_experiments_train_on_gpus(tmp_path, gpus):
    """The utility curve's up to 31 U-Nets each predict every real test slice (0.11 s per 256-px slice on
    two CPU threads: a day of CPU for AutoPET's test split); the segmenter rule's U-Net likewise. One GPU
    when the experiment whose real images they score trains on GPUs."""
    config = copy.deepcopy(TINY)
    del config["datasets"]["labels_only"], config["experiments"]["tiny"]["generate_from"]
    config["experiments"]["tiny"]["gpus"] = gpus
    config["experiments"]["tiny"]["train"]["device"] = "auto"
    first = ("results/split/phantom/split.tsv",)
    # real_stats: Inception features of the real slices; audit_shared: every shipped slice's nearest training slice
    rules = ("segmenter", "utility", "real_stats", "audit_shared")
    for rule, res in _job_resources(tmp_path, config, rules, first).items():
        assert res["gpu"] == str(min(gpus, 1)), rule
        assert _partition(res) == ("CHANGE_ME_gpu" if gpus else "CHANGE_ME_cpu"), rule


def test_inception_statistics_ask_for_no_gpu_once_the_weights_are_known_missing(tmp_path):
    """real_stats computes nothing without the Inception weights (perceptual auto, a failed download): it
    must not hold a GPU for that. Its segmenter still asks for one."""
    from medsynth.metrics import INCEPTION_FILE

    config = copy.deepcopy(TINY)
    del config["datasets"]["labels_only"], config["experiments"]["tiny"]["generate_from"]
    config["experiments"]["tiny"].update(gpus=1)
    config["experiments"]["tiny"]["train"]["device"] = "auto"
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "status.json").write_text(json.dumps({INCEPTION_FILE: "unavailable: no network"}))
    config["metrics"].update(perceptual="auto", weights_dir=str(weights))
    found = _job_resources(tmp_path, config, ("real_stats", "segmenter"), ("results/split/phantom/split.tsv",))
    assert found["real_stats"]["gpu"] == "0" and _partition(found["real_stats"]) == "CHANGE_ME_cpu"
    assert found["segmenter"]["gpu"] == "1"


def test_every_job_asks_for_the_cpus_its_threads_use():
    """The SLURM plugin asks for a job's threads as its CPUs (--cpus-per-task), and Snakemake runs the job's
    torch/NumPy with as many (OMP_NUM_THREADS): a cpus_per_task in the profile would break the match (it
    asked 8 CPUs for a 2-thread training, 2 for segmenter_threads 8). The heavy rules take their threads from
    the config."""
    profile = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())
    assert "cpus_per_task" not in profile["default-resources"]
    assert all("cpus_per_task" not in r for r in profile["set-resources"].values()), profile["set-resources"]
    rules = {smk.stem: smk.read_text() for smk in (REPO / "workflow/rules").glob("*.smk")}
    for stage, rule, key in [("generate", "generate", 'config["generate"]["threads"]'),
                             ("evaluate", "evaluate", 'config["metrics"]["threads"]'),
                             ("metrics", "real_stats", 'config["metrics"]["threads"]'),
                             ("export", "audit_shared", 'config["metrics"]["threads"]'),
                             ("metrics", "segmenter", 'config["metrics"]["segmenter_threads"]'),
                             ("utility", "utility", 'config["metrics"]["segmenter_threads"]'),
                             ("train", "train", 'config["experiments"][w.experiment]["threads"]')]:
        body = re.search(rf"^rule {rule}:\n(.*?)(?=^\S|\Z)", rules[stage], re.S | re.M).group(1)
        assert f"threads: {key}" in body or f"threads: lambda w: {key}" in body, rule
    for name in ("autopet", "synthrad", "autopet_synthrad"):  # GPU trainings: CPUs to feed the GPU
        config = yaml.safe_load((REPO / f"config/{name}.yaml").read_text())
        assert all(x["threads"] == 8 for x in config["experiments"].values() if x.get("gpus")), name
