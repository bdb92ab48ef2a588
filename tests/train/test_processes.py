"""Training as separate processes: kill -9 and resume, SIGTERM, and two-process data parallelism."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from medsynth.data.slicing import CaseSlices
from medsynth.io.tables import read_tsv, write_tsv
from medsynth.io.checkpoint import load_checkpoint
from medsynth.train.loop import INTERRUPTED_EXIT


@pytest.fixture
def project(tmp_path, make_toy_slices):
    """Results of the data stages for a toy dataset, and a config with one tiny experiment."""
    data = make_toy_slices(n=16, size=32)
    parts = {"case_a": "train", "case_b": "train", "case_c": "val", "case_d": "test"}
    for i, case in enumerate(parts):
        sl = slice(4 * i, 4 * i + 4)
        CaseSlices(data.images[sl, 0].numpy(), data.labels[sl].numpy().astype(np.uint8),
                   data.masks[sl, 0].numpy().astype(np.uint8), np.arange(4, dtype=np.int32),
                   np.zeros((4, 2), np.int32)).save(tmp_path / "results/slices/toy/cases" / case / "slices.npz")
    write_tsv(tmp_path / "results/split/toy/split.tsv", [{"case_id": c, "part": p} for c, p in parts.items()],
              ["case_id", "part"])
    config = {"datasets": {"toy": {"source": "phantom", "modality": "CT", "labels": [{"name": n, "values": [i]} for i, n in enumerate("abc")]}},
              "experiments": {"exp": {"dataset": "toy", "train": {
                  "model": "tiny", "steps": 40, "batch_size": 2, "eval_every": 5, "sample_every": 100,
                  "checkpoint_every": 5, "val_max_slices": 4, "device": "cpu"}}}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    return tmp_path


def launch(project: Path, *prefix: str) -> subprocess.Popen:
    cmd = [*prefix, "-m", "medsynth.cli", "train", "--config", "config.yaml", "--experiment", "exp"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd if prefix else [sys.executable, *cmd], cwd=project, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for_checkpoint(path: Path, proc: subprocess.Popen, min_step: int = 1, timeout: float = 120) -> int:
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise AssertionError(f"training ended early:\n{proc.stdout.read()}")
        if path.exists():
            try:
                step = load_checkpoint(path)["step"]
            except ValueError:  # caught between write and rename: impossible by design, but retry
                step = 0
            if step >= min_step:
                return step
        time.sleep(0.2)
    raise AssertionError("no checkpoint appeared")


@pytest.mark.slow
def test_kill_9_then_rerun_resumes_from_the_last_checkpoint(project):
    latest = project / "results/train/exp/checkpoints/latest.pt"
    proc = launch(project)
    wait_for_checkpoint(latest, proc, min_step=10)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = load_checkpoint(latest)["step"]
    assert killed_at >= 10

    rerun = launch(project)
    out, _ = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, out
    assert f"from step {killed_at}" in out
    state = load_checkpoint(latest)
    assert state["step"] == 40
    assert [h["step"] for h in state["history"]] == list(range(5, 41, 5))  # history from before the kill kept
    steps = [int(r["step"]) for r in read_tsv(project / "results/train/exp/losses.tsv")]
    assert steps == list(range(1, 41))  # every step once, none lost or duplicated
    events = [(r["event"], int(r["step"])) for r in read_tsv(project / "results/train/exp/jobs.tsv")]
    assert events == [("started", 0), ("resumed", killed_at), ("finished", 40)]  # kill -9 leaves no record


@pytest.mark.slow
def test_sigterm_writes_a_checkpoint_and_exits_for_requeue(project):
    latest = project / "results/train/exp/checkpoints/latest.pt"
    proc = launch(project)
    before = wait_for_checkpoint(latest, proc, min_step=5)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == INTERRUPTED_EXIT, out
    after = load_checkpoint(latest)["step"]
    assert after >= before and after < 40
    assert "checkpoint written at step" in out
    jobs = read_tsv(project / "results/train/exp/jobs.tsv")
    assert [(r["event"], int(r["step"])) for r in jobs] == [("started", 0), ("stopped", after)]
    assert jobs[-1]["detail"].startswith("SIGTERM")


@pytest.mark.slow
def test_two_processes_hold_identical_weights(project, tmp_path):
    """torchrun with 2 CPU processes (gloo): every rank must end with the same generator and EMA."""
    script = tmp_path / "ddp_train.py"
    script.write_text(
        "import json, os, yaml\n"
        "from medsynth.train.run import run_experiment, split_files\n"
        "cfg = yaml.safe_load(open('config.yaml'))\n"
        "out = run_experiment(cfg['experiments']['exp']['train'], cfg['datasets']['toy']['labels'],\n"
        "                     'results/train/exp', split_files('results', 'toy', ['train']),\n"
        "                     split_files('results', 'toy', ['val']))\n"
        f"open('{tmp_path}/rank' + os.environ['RANK'] + '.json', 'w').write(json.dumps(out['weights_digest']))\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cfg = yaml.safe_load((project / "config.yaml").read_text())
    cfg["experiments"]["exp"]["train"]["steps"] = 6
    (project / "config.yaml").write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)]
    result = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    digests = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert digests[0] == digests[1]  # G and EMA identical on both ranks
    assert load_checkpoint(project / "results/train/exp/checkpoints/latest.pt")["world_size"] == 2
    assert len(read_tsv(project / "results/train/exp/losses.tsv")) == 6  # rank 0 alone logged


def _launch_spec(project: Path, steps: int) -> Path:
    from medsynth.train.launch import write_spec
    from medsynth.train.run import split_files

    cfg = yaml.safe_load((project / "config.yaml").read_text())
    # ram_cache_gb 0: every process spills its slices to memory-mapped files (its own, see below).
    settings = {**cfg["experiments"]["exp"]["train"], "steps": steps, "ram_cache_gb": 0}
    return write_spec(project / "launch.json", {
        "settings": settings, "labels": cfg["datasets"]["toy"]["labels"], "run_dir": "results/train/exp",
        "train_files": split_files(project / "results", "toy", ["train"]),
        "val_files": split_files(project / "results", "toy", ["val"]), "threads": 1,
        "log": str(project / "train.log")})


def _launcher(project: Path, spec: Path) -> subprocess.Popen:
    """``launch`` in a process of its own group, as SLURM starts a job step's task."""
    code = ("import logging, sys; from pathlib import Path; from medsynth.train.launch import launch; "
            "logging.basicConfig(level=logging.INFO); sys.exit(launch(Path(sys.argv[1]), 2, Path(sys.argv[2])))")
    return subprocess.Popen([sys.executable, "-c", code, str(spec), str(project / "train.log")], cwd=project,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _process_tree(root: int) -> list[int]:
    """``root`` and all its descendants, from /proc (as slurmstepd's linuxproc tracking finds them)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.parametrize("delivery", ["process-group", "process-tree"])
def test_launch_in_two_processes_stops_on_a_job_signal_and_resumes(project, delivery):
    """SLURM's time-limit warning (SIGUSR1) stops every torchrun worker with a checkpoint, and the launch
    ends only after them, whether the signal reaches the task's process group (a terminal,
    proctrack/pgid) or every process of the step (slurmstepd with cgroup or linuxproc tracking);
    the same launch again resumes and finishes."""
    latest = project / "results/train/exp/checkpoints/latest.pt"
    proc = _launcher(project, _launch_spec(project, steps=1000))
    wait_for_checkpoint(latest, proc, min_step=5, timeout=240)
    tree = _process_tree(proc.pid)
    assert len(tree) >= 4  # launcher, torchrun, two workers
    if delivery == "process-group":
        os.killpg(proc.pid, signal.SIGUSR1)
    else:
        for pid in tree:
            os.kill(pid, signal.SIGUSR1)
    out, _ = proc.communicate(timeout=300)
    log = (project / "train.log").read_text()
    assert proc.returncode == INTERRUPTED_EXIT, out + log
    assert not [pid for pid in tree if _alive(pid)]  # no worker outlives the launch (the job)
    stopped = load_checkpoint(latest)
    assert 5 <= stopped["step"] < 1000 and stopped["world_size"] == 2
    assert "training in 2 processes" in out and "SIGUSR1 received" in out
    assert "checkpoint written at step" in log
    cache = project / "results/train/exp/cache"
    assert sorted(p.name for p in cache.iterdir()) == ["rank0", "rank1"]  # no two processes share a spill file
    if delivery == "process-tree":
        return

    # The retried job: the same launch (here asked to stop a few steps later) resumes where it stopped.
    end = stopped["step"] + 4
    rerun = _launcher(project, _launch_spec(project, steps=end))
    out, _ = rerun.communicate(timeout=300)
    log = (project / "train.log").read_text()
    assert rerun.returncode == 0, out + log
    assert f"from step {stopped['step']}" in log
    assert load_checkpoint(latest)["step"] == end
    steps = [int(r["step"]) for r in read_tsv(project / "results/train/exp/losses.tsv")]
    assert steps == list(range(1, end + 1))  # rank 0 alone logged every step once
    jobs = read_tsv(project / "results/train/exp/jobs.tsv")
    assert [(r["event"], int(r["step"]), r["processes"]) for r in jobs] == [
        ("started", 0, "2"), ("stopped", stopped["step"], "2"), ("resumed", stopped["step"], "2"), ("finished", end, "2")]
    assert jobs[1]["detail"].startswith("SIGUSR1")


def test_launch_refuses_zero_processes(tmp_path):
    from medsynth.train.launch import launch

    with pytest.raises(ValueError, match="at least 1"):
        launch(tmp_path / "spec.json", 0)
