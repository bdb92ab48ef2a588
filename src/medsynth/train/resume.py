"""Resuming a run: ``latest.pt`` and the checkpoint before it, so an unreadable one does not end a run.

Writes are atomic, yet a file can still be damaged afterwards (a full or
failing disk, a copy cut short, a quota on a shared file system). Each write
of ``latest.pt`` therefore first keeps the file it replaces as
``latest.prev.pt``; resuming reads ``latest.pt`` and, when it cannot, the
previous one, with a warning: the steps between the two run again. A
checkpoint of other settings or data is moved aside, never resumed.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from medsynth.train import distributed as ddp
from medsynth.io.checkpoint import load_checkpoint, save_checkpoint
from medsynth.train.context import RunContext
from medsynth.train.state import RunState
from medsynth.train.validation import revalidate

log = logging.getLogger(__name__)

LATEST = "latest.pt"
PREVIOUS = "latest.prev.pt"


class CheckpointsUnreadable(RuntimeError):
    """Neither ``latest.pt`` nor ``latest.prev.pt`` can be read."""


class LatestCheckpoint:
    """The run's resume point in ``ckpt_dir``: load the newest readable state, save with one kept back."""

    def __init__(self, ckpt_dir: Path) -> None:
        self.path = Path(ckpt_dir) / LATEST
        self.previous = Path(ckpt_dir) / PREVIOUS
        # A latest.pt found unreadable must not be kept as the previous one, over a good file.
        self._keep_on_save = True
        self.step: int | None = None  # of the checkpoint last loaded or saved: where a restart would resume

    def exists(self) -> bool:
        return self.path.exists() or self.previous.exists()

    def load(self) -> dict | None:
        """The state to resume from (on the CPU: RNG states must stay CPU tensors); None for a new run."""
        if not self.exists():
            return None
        try:
            state = load_checkpoint(self.path, map_location="cpu")
            self.step = state["step"]
            return state
        except (FileNotFoundError, ValueError) as exc:
            problem = exc
        try:
            state = load_checkpoint(self.previous, map_location="cpu")
        except (FileNotFoundError, ValueError) as exc:
            raise CheckpointsUnreadable(
                f"cannot resume: {problem}; and {exc}. Restore one of them from a backup, or move them away "
                f"(e.g. mv {self.path.parent} {self.path.parent}.unreadable) to start training afresh"
            ) from exc
        log.warning("%s; resuming from the previous checkpoint %s (step %d) instead: the steps after it run "
                    "again, and %s is replaced at the next checkpoint", problem, self.previous, state["step"],
                    self.path.name)
        self._keep_on_save = False
        self.step = state["step"]
        return state

    def save(self, payload: dict) -> Path:
        keep = self.previous if self._keep_on_save else None
        path = save_checkpoint(self.path, payload, keep_previous=keep)
        self._keep_on_save = True
        self.step = payload["step"]
        return path


def move_stale(run_dir: Path, checkpoint: Path) -> Path:
    """Move a run trained with other settings or data out of the way (kept, never deleted)."""
    stale = Path(run_dir) / f"stale-{time.strftime('%Y%m%d-%H%M%S')}"
    log.warning("%s was trained with other settings or data; moved to %s, starting afresh", checkpoint, stale)
    stale.mkdir(parents=True)
    # jobs.tsv too: the model card's wall time and job count are the new run's, not the discarded one's.
    for sub in ("checkpoints", "live", "samples", "jobs.tsv"):
        if (Path(run_dir) / sub).exists():
            shutil.move(str(Path(run_dir) / sub), str(stale / sub))
    return stale


def resume(ctx: RunContext, state: RunState, latest: LatestCheckpoint) -> bool:
    """Bring ``state`` to the run's last checkpoint when it has the same fingerprint (True); otherwise leave
    it new and move the old run away. A history validated under another identity is recomputed (rank 0)."""
    saved = latest.load()
    resumed = False
    ddp.barrier()  # every rank has read the files before rank 0 may move or rewrite them
    if saved is not None:
        if saved.get("fingerprint") in (ctx.fingerprint, ctx.legacy_fingerprint):
            saved = from_legacy(saved, ctx)
            state.restore(saved, ctx.world_size, ctx.device)
            resumed = True
            log.info("resuming %s from step %d", ctx.run_dir, state.step)
            fresh = None
            if ctx.main:
                fresh = revalidate(saved, ctx.validation, ctx.ckpt_dir, state.nets.ema.model, ctx.validate)
            if fresh is not None:
                state.history, state.best = fresh["history"], fresh["best"]
                latest.save(fresh)  # a finished run writes no checkpoint of its own
        else:
            latest.step = None  # not resumed: training starts at step 0
            if ctx.main:
                move_stale(ctx.run_dir, latest.path)
    ddp.barrier()
    return resumed


def from_legacy(saved: dict, ctx: RunContext) -> dict:
    """A checkpoint of a run started before the validation slices left the fingerprint: its fingerprint held
    them and matched, so it was validated on today's slices; its validation identity says so, rather than
    have every snapshot validated again (the next checkpoint carries the fingerprint of today)."""
    if saved.get("fingerprint") == ctx.fingerprint or not isinstance(saved.get("validation"), dict):
        return saved
    return {**saved, "validation": {**saved["validation"], "val_slices": ctx.validation["val_slices"]}}
