"""Many Snakemake runs from one import: each run is a child forked after Snakemake and the modules the
Snakefile imports are loaded, so it skips the ~1.2 s of imports a ``python -m snakemake`` pays on every start
(the rerun table's 120 dry runs: ~2.5x faster). The children run Snakemake's own command-line entry point
(``snakemake.cli.main``) with the given arguments, as ``python -m snakemake`` does.

Run as a script by ``run_all``: the forking process is a fresh, single-threaded one, so no lock held by
another thread (pytest's, a thread pool's) can be copied into a child.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tiny_workflow import no_controller_env

# What common.smk imports at every start: loaded once, before the forks.
PRELOAD = ("snakemake.cli", "medsynth.config.load", "medsynth.inference.generator_contract", "medsynth.data.cohort")


def run_all(runs: dict[str, list[str]], parallel: int = 2) -> dict[str, subprocess.CompletedProcess]:
    """name -> the finished run of ``python -m snakemake <arguments>`` for each of ``runs`` (name ->
    arguments), ``parallel`` at a time, in an environment without a SLURM controller."""
    with tempfile.TemporaryDirectory(prefix="forked-snakemake-") as folder:
        spec = {"parallel": parallel, "runs": {
            name: {"argv": argv, "out": f"{folder}/{i}.out", "err": f"{folder}/{i}.err"}
            for i, (name, argv) in enumerate(runs.items())}}
        (Path(folder) / "spec.json").write_text(json.dumps(spec))
        forker = subprocess.run([sys.executable, __file__, f"{folder}/spec.json"], capture_output=True, text=True,
                                env=no_controller_env(), timeout=3600)
        assert forker.returncode == 0, forker.stderr[-3000:]
        codes = json.loads(forker.stdout)
        return {name: subprocess.CompletedProcess(["snakemake", *run["argv"]], codes[name],
                                                  Path(run["out"]).read_text(), Path(run["err"]).read_text())
                for name, run in spec["runs"].items()}


def _child(argv: list[str], out: str, err: str) -> None:
    for fd, path in ((1, out), (2, err)):
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
    code = 1
    try:
        import snakemake.cli

        sys.argv = ["snakemake", *argv]  # the workflow reads its targets from the command line
        snakemake.cli.main(argv)
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _main(spec_file: str) -> None:
    import importlib

    spec = json.loads(Path(spec_file).read_text())
    for module in PRELOAD:
        importlib.import_module(module)
    running: dict[int, str] = {}
    codes: dict[str, int] = {}

    def reap() -> None:
        pid, status = os.wait()
        codes[running.pop(pid)] = os.waitstatus_to_exitcode(status)

    for name, run in spec["runs"].items():
        while len(running) >= spec["parallel"]:
            reap()
        pid = os.fork()
        if pid == 0:
            _child(run["argv"], run["out"], run["err"])
        running[pid] = name
    while running:
        reap()
    print(json.dumps(codes))


if __name__ == "__main__":
    _main(sys.argv[1])
