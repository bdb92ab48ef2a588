"""What runs after a training step, on its schedule: sample grids, validation with its snapshot,
``latest.pt``, and stopping on a signal."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn, TextIO

from medsynth.inference.synthesize import synthesize
from medsynth.io.tables import write_tsv
from medsynth.train import distributed as ddp
from medsynth.train.context import RunContext
from medsynth.train.failures import clear_passed
from medsynth.train.iteration import check_weights
from medsynth.train.records import METRIC_COLUMNS, record_job_event
from medsynth.train.resume import LatestCheckpoint
from medsynth.train.signals import INTERRUPTED_EXIT, StopFlag
from medsynth.train.state import RunState, checkpoint_payload
from medsynth.train.validation import best_of, save_snapshot

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Due:
    """Which periodic hooks a step runs; the last step runs them all."""

    sample: bool
    validate: bool
    checkpoint: bool

    @property
    def refresh(self) -> bool:
        """The EMA model's spectral norms are refreshed before it is sampled or validated."""
        return self.sample or self.validate


def due(step: int, steps: int, sample_every: int, eval_every: int, checkpoint_every: int) -> Due:
    last = step == steps
    return Due(sample=step % sample_every == 0 or last, validate=step % eval_every == 0 or last,
               checkpoint=step % checkpoint_every == 0 or last)


def write_samples(ctx: RunContext, state: RunState) -> Path:
    """``samples/step_XXXXXX.png``: label | generated (EMA) | real, on the fixed validation slices."""
    from medsynth.io.figures import sample_grid  # matplotlib only when training runs

    s, fixed = ctx.settings, ctx.fixed
    fake = synthesize(state.nets.ema.model, fixed.labels.long(), ctx.num_classes, s.seed, s.batch_size, ctx.device,
                      context=fixed.context.long())
    path = ctx.run_dir / "samples" / f"step_{state.step:06d}.png"
    sample_grid(path, fixed.labels, [fake], None if ctx.unpaired else fixed.images.float(), ctx.num_classes,
                title=f"step {state.step} (EMA generator)")
    return path


def validate_and_snapshot(ctx: RunContext, state: RunState) -> dict[str, float]:
    """Validate the EMA generator; extend the history, best and ``live/metrics.tsv``; save its snapshot."""
    metrics = ctx.validate(state.nets.ema.model)
    state.history.append({"step": state.step, **metrics})
    state.best = best_of(state.history)
    write_tsv(ctx.live_dir / "metrics.tsv", state.history, METRIC_COLUMNS)
    save_snapshot(ctx.ckpt_dir, state.step, state.nets.ema.state_dict(), ctx.spec.to_dict(), ctx.num_classes,
                  metrics, ctx.validation, {"classes": list(ctx.class_names), "slice_size": ctx.slice_size})
    log.info("step %d validation: %s", state.step, metrics)
    return metrics


def save_latest(ctx: RunContext, state: RunState, latest: LatestCheckpoint, losses_fh: TextIO) -> Path:
    """``latest.pt``, with the loss rows up to it on disk first; past a recorded non-finite loss, the record goes."""
    losses_fh.flush()
    path = latest.save(checkpoint_payload(ctx, state))
    clear_passed(ctx.ckpt_dir, state.step)
    return path


def exit_for_requeue(ctx: RunContext, state: RunState, stop: StopFlag) -> NoReturn:
    """After the checkpoint a stop signal asked for: note it in ``jobs.tsv`` and exit to be retried."""
    ddp.barrier()
    if ctx.main:
        record_job_event(ctx.run_dir, "stopped", state.step, ctx.world_size, f"{stop.name()}; checkpoint written")
    log.warning("stop signal received: checkpoint written at step %d, exiting to be resumed", state.step)
    raise SystemExit(INTERRUPTED_EXIT)


def after_step(ctx: RunContext, state: RunState, latest: LatestCheckpoint, losses_fh: TextIO | None,
               stop: StopFlag) -> None:
    """The hooks due after ``state.step``; rank 0 alone writes. Exits (INTERRUPTED_EXIT) on a stop signal."""
    s = ctx.settings
    hooks = due(state.step, s.steps, s.sample_every, s.eval_every, s.checkpoint_every)
    writes = hooks.refresh or hooks.checkpoint
    if writes:  # on every rank (the replicas are identical), before anything of this step is written
        check_weights(state.nets, state.step, latest.path)
    if hooks.refresh:
        state.nets.ema.refresh()  # on every rank, so the replicas' EMA stays identical
    if ctx.main and hooks.sample:
        write_samples(ctx, state)
    if ctx.main and hooks.validate:
        validate_and_snapshot(ctx, state)
    # Every rank must agree to stop at the same step: a signal may reach only some processes.
    stopping = ddp.any_rank(stop.signal is not None, ctx.device)
    if stopping and not writes:
        check_weights(state.nets, state.step, latest.path)
    if ctx.main and (hooks.checkpoint or stopping):
        save_latest(ctx, state, latest, losses_fh)
    if stopping:
        exit_for_requeue(ctx, state, stop)
