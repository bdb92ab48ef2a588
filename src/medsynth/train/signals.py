"""Stop signals: SIGTERM, or SIGUSR1 (SLURM's warning before the time limit) -> checkpoint and exit to resume."""

from __future__ import annotations

import signal

INTERRUPTED_EXIT = 75  # EX_TEMPFAIL: the job should be retried, and will resume


class StopFlag:
    """Notes a stop signal while training; the loop checks it after each step (a handler never
    interrupts a step half-done). The previous handlers come back on exit."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._old: dict[int, object] = {}

    def __enter__(self) -> "StopFlag":
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. inside a test runner thread)
                pass
        return self

    def _handle(self, signum, frame) -> None:
        self.signal = signum

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def name(self) -> str:
        """What stopped this process: its own signal, or (multi-process) another rank's."""
        return signal.Signals(self.signal).name if self.signal else "another process"
