"""Run one training as several processes (one per GPU) with torchrun, inside one job.

The Snakemake rule (and anyone else) describes the training once, as the
keyword arguments of ``run.run_experiment`` in a JSON file; ``launch`` starts
``torchrun --standalone --nproc_per_node=N -m medsynth.train.run <spec>``.

Signals: SLURM's warning before the time limit (SIGTERM with profiles/slurm;
SIGUSR1 where a job script asks for it) and the stop at the limit (SIGTERM)
reach every process of the job step: slurmstepd signals its
whole process tree (cgroup or linuxproc tracking), a terminal its process
group. torchrun is told to handle SIGUSR1 too (by default it would die of it
and orphan its workers): it passes the signal on to every worker and waits up
to ``SHUTDOWN_TIMEOUT_S`` while each writes its checkpoint. This process only
notes the signal and waits for torchrun, so the job ends after the workers
and exits with ``INTERRUPTED_EXIT``: Snakemake retries it and it resumes. A
second signal sent to torchrun here would break its orderly shutdown.
"""

from __future__ import annotations

import contextlib
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
# Time the workers get to finish the step, validation and checkpoint after a stop signal; below
# the 300 s of warning that profiles/slurm asks SLURM for.
SHUTDOWN_TIMEOUT_S = 240


def write_spec(path: Path, spec: Mapping) -> Path:
    """The training's ``run_experiment`` arguments as JSON (paths as strings)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(spec), indent=1, default=str))
    return path


def _torchrun_options() -> set[str]:
    from torch.distributed.run import get_args_parser

    return {opt for action in get_args_parser()._actions for opt in action.option_strings}


def torchrun_command(spec_path: Path, processes: int) -> list[str]:
    # --standalone: a rendezvous on this node at a free port, so two trainings on one node cannot collide.
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    options = _torchrun_options()
    if "--signals-to-handle" in options:
        cmd.append("--signals-to-handle=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1")
    else:
        log.warning("this torch's torchrun has no --signals-to-handle and dies of SIGUSR1: SLURM's warning "
                    "before the time limit will stop the training without a checkpoint (update torch)")
    if "--shutdown-timeout" in options:
        cmd.append(f"--shutdown-timeout={SHUTDOWN_TIMEOUT_S}")
    return [*cmd, "-m", "medsynth.train.run", str(spec_path)]


def launch(spec_path: Path, processes: int, output: Path | None = None) -> int:
    """Run the training in ``processes`` processes; returns the exit status for the job.

    ``output`` receives torchrun's own messages (the workers log to the spec's
    ``log`` file); without it they go to this process's stdout and stderr.
    """
    if processes < 1:
        raise ValueError(f"processes must be at least 1, got {processes}")
    stops: list[int] = []
    cmd = torchrun_command(spec_path, processes)
    # Noted, not acted on: torchrun received the same signal and is shutting its workers down.
    previous = {sig: signal.signal(sig, lambda signum, frame: stops.append(signum)) for sig in STOP_SIGNALS}
    try:
        with open(output, "a", buffering=1) if output is not None else contextlib.nullcontext() as sink:
            log.info("training in %d processes: %s", processes, " ".join(cmd))
            status = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT if sink else None).wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if stops and status != 0:
        log.warning("%s received: the workers wrote their checkpoint; exiting %d to be resumed",
                    signal.Signals(stops[0]).name, INTERRUPTED_EXIT)
        return INTERRUPTED_EXIT
    if status != 0:
        log.error("torchrun exited with status %d; the workers' errors are in the log above", status)
    return status
