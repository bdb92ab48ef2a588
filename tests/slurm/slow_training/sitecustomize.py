"""Test-only (on PYTHONPATH in the SLURM test): training steps are slow until a stop signal came.

Every medsynth training step sleeps ``MEDSYNTH_TEST_STEP_SECONDS`` while the file
``MEDSYNTH_TEST_STOP_MARKER`` does not exist; the first stop signal a training
process receives creates it. So the first training job always outlasts its
one-minute time limit, whatever the machine's speed, and the resumed job runs
at full speed: the test sees a time-limit stop and a resume, deterministically.
"""

import importlib.abc
import importlib.util
import os
import sys
import time
from pathlib import Path

TARGET = "medsynth.train.loop"


def _patch(loop) -> None:
    # The loop's pieces were imported with it: the step is called from iteration, the handler is StopFlag's.
    from medsynth.train import iteration, signals

    delay = float(os.environ["MEDSYNTH_TEST_STEP_SECONDS"])
    marker = Path(os.environ["MEDSYNTH_TEST_STOP_MARKER"])

    def slow(step):
        def wrapper(*args, **kwargs):
            if not marker.exists():
                time.sleep(delay)
            return step(*args, **kwargs)
        return wrapper

    iteration.paired_step, iteration.unpaired_step = slow(iteration.paired_step), slow(iteration.unpaired_step)
    handle = signals.StopFlag._handle

    def handle_and_mark(self, signum, frame):
        marker.touch()
        handle(self, signum, frame)

    signals.StopFlag._handle = handle_and_mark


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Patch the training loop right after it is imported (torch is not imported otherwise)."""

    def find_spec(self, name, path, target=None):
        if name != TARGET:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            _patch(module)

        spec.loader.exec_module = exec_module
        return spec


if os.environ.get("MEDSYNTH_TEST_STEP_SECONDS") and os.environ.get("MEDSYNTH_TEST_STOP_MARKER"):
    sys.meta_path.insert(0, _PatchOnImport())
