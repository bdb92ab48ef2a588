"""The run folder's tables: live losses and metrics, the job log, and the outputs published at the end.

``live/losses.tsv`` and ``live/metrics.tsv`` are appended while training;
``losses.tsv``, ``metrics.tsv`` and ``checkpoints.tsv`` (the declared
Snakemake outputs) are written once training has finished.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import TextIO

from medsynth.io.atomic import replacing
from medsynth.io.tables import read_tsv, write_tsv
from medsynth.metrics import DIRECTIONS

METRIC_COLUMNS = ["step", *DIRECTIONS]
JOB_COLUMNS = ["time", "event", "step", "slurm_job_id", "processes", "detail"]


def record_job_event(run_dir: Path, event: str, step: int, processes: int, detail: str = "") -> None:
    """One line in ``jobs.tsv``: when each job of a training started, stopped (and why) or finished.

    Snakemake replaces a failed job's log when it retries it; this table keeps
    the whole chain of jobs of a long training.
    """
    path = run_dir / "jobs.tsv"
    rows = read_tsv(path) if path.is_file() else []
    rows.append({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "event": event, "step": step,
                 "slurm_job_id": os.environ.get("SLURM_JOB_ID", ""), "processes": processes, "detail": detail})
    write_tsv(path, rows, JOB_COLUMNS)


def open_losses(path: Path, columns: list[str]) -> TextIO:
    """``live/losses.tsv`` for appending, line-buffered; the header when the file is new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists() or path.stat().st_size == 0
    fh = path.open("a", buffering=1)
    if new:
        fh.write("\t".join(columns) + "\n")
    return fh


def loss_line(row: dict, columns: list[str]) -> str:
    return "\t".join(str(row[c]) for c in columns) + "\n"


def truncate_losses(path: Path, step: int, columns: list[str]) -> None:
    """Drop loss rows logged after the checkpoint we resume from: those steps run again."""
    if not path.exists():
        return
    rows = [r for r in read_tsv(path) if r.get("step", "").isdigit() and int(r["step"]) <= step]
    write_tsv(path, rows, columns)


def start_live_tables(live_dir: Path, step: int, history: list[dict], loss_columns: list[str]) -> None:
    """The live tables as of ``step``, the step training (re)starts from."""
    truncate_losses(live_dir / "losses.tsv", step, loss_columns)
    write_tsv(live_dir / "metrics.tsv", history, METRIC_COLUMNS)


def finalize(run_dir: Path, history: list[dict]) -> dict:
    """Publish the declared outputs once training is complete."""
    live = run_dir / "live"
    with replacing(run_dir / "losses.tsv") as tmp:
        shutil.copyfile(live / "losses.tsv", tmp)
    write_tsv(run_dir / "metrics.tsv", history, METRIC_COLUMNS)
    rows = [{"step": h["step"], "checkpoint": f"checkpoints/ema_step_{h['step']:06d}.pt"} for h in history]
    write_tsv(run_dir / "checkpoints.tsv", rows, ["step", "checkpoint"])
    return {"steps": history[-1]["step"] if history else 0, "history": history}
