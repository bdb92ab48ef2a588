"""Run one training as several processes (one per GPU) with torchrun, inside one job.

The Snakemake rule (and anyone else) describes the training once, as the
keyword arguments of ``run.run_experiment`` in a JSON file; ``launch`` starts
``torchrun --standalone --nproc_per_node=N -m medsynth.train.run <spec>``.

Signals: SLURM's warning before the time limit (SIGUSR1) and a cancellation
(SIGTERM) go to the job step's processes. torchrun dies of a SIGUSR1 it does
not handle, and it starts its workers in sessions of their own, where the
job's signal does not reach them. So torchrun runs in its own session too,
and this process turns either signal into the SIGTERM that torchrun passes on
to every worker: each writes its checkpoint and exits, and the launch ends
with ``INTERRUPTED_EXIT`` so the retried job resumes.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
from pathlib import Path
from typing import Mapping

from medsynth.train.loop import INTERRUPTED_EXIT

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)


def write_spec(path: Path, spec: Mapping) -> Path:
    """The training's ``run_experiment`` arguments as JSON (paths as strings)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(spec), indent=1, default=str))
    return path


def torchrun_command(spec_path: Path, processes: int) -> list[str]:
    # --standalone: a rendezvous on this node at a free port, so two trainings on one node cannot collide.
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
            "-m", "medsynth.train.run", str(spec_path)]


def launch(spec_path: Path, processes: int, output: Path | None = None) -> int:
    """Run the training in ``processes`` processes; returns the exit status for the job.

    ``output`` receives torchrun's own messages (the workers log to the spec's
    ``log`` file); without it they go to this process's stdout and stderr.
    """
    if processes < 1:
        raise ValueError(f"processes must be at least 1, got {processes}")
    stops: list[int] = []
    sink = open(output, "a", buffering=1) if output is not None else None  # noqa: SIM115 (closed below)
    try:
        proc = subprocess.Popen(torchrun_command(spec_path, processes), start_new_session=True,
                                stdout=sink, stderr=subprocess.STDOUT if sink else None)

        def forward(signum: int, frame) -> None:
            stops.append(signum)
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

        previous = {sig: signal.signal(sig, forward) for sig in STOP_SIGNALS}
        try:
            log.info("training in %d processes: %s", processes, " ".join(proc.args))
            status = proc.wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    finally:
        if sink is not None:
            sink.close()
    if stops:
        log.warning("%s received: the workers wrote their checkpoint; exiting %d to be resumed",
                    signal.Signals(stops[0]).name, INTERRUPTED_EXIT)
        return INTERRUPTED_EXIT
    if status != 0:
        log.error("torchrun exited with status %d; the workers' errors are in the log above", status)
    return status
