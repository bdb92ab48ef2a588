"""The hooks after a step: which run at which step, what each writes, and stopping on a signal."""

import signal

import pytest

from medsynth.io.tables import read_tsv
from medsynth.io.checkpoint import load_checkpoint
from medsynth.train.hooks import after_step, due
from medsynth.train.records import open_losses
from medsynth.train.resume import LatestCheckpoint
from medsynth.train.signals import INTERRUPTED_EXIT, StopFlag
from medsynth.train.validation import best_of


def steps_where(flag: str, steps: int, **every) -> list[int]:
    return [s for s in range(1, steps + 1) if getattr(due(s, steps, **every), flag)]


def test_the_schedule_runs_each_hook_at_its_multiples_and_all_at_the_last_step():
    every = dict(sample_every=10, eval_every=4, checkpoint_every=6)
    assert steps_where("sample", 25, **every) == [10, 20, 25]
    assert steps_where("validate", 25, **every) == [4, 8, 12, 16, 20, 24, 25]
    assert steps_where("checkpoint", 25, **every) == [6, 12, 18, 24, 25]
    assert steps_where("refresh", 25, **every) == [4, 8, 10, 12, 16, 20, 24, 25]
    assert steps_where("checkpoint", 24, **every) == [6, 12, 18, 24]  # the last step on the schedule: once


def run_hooks(ctx, state, steps, stop):
    """The hooks after each of ``steps``, without training in between."""
    latest = LatestCheckpoint(ctx.ckpt_dir)
    with open_losses(ctx.live_dir / "losses.tsv", ctx.loss_columns) as fh:
        for step in steps:
            state.step = step
            after_step(ctx, state, latest, fh, stop)


def test_hooks_write_samples_snapshots_history_and_latest_on_their_steps(toy_run):
    ctx, state = toy_run(steps=5, sample_every=4, eval_every=2, checkpoint_every=3)
    run_hooks(ctx, state, range(1, 6), StopFlag())
    assert sorted(p.name for p in (ctx.run_dir / "samples").iterdir()) == ["step_000004.png", "step_000005.png"]
    assert [r["step"] for r in state.history] == [2, 4, 5]
    assert [int(r["step"]) for r in read_tsv(ctx.live_dir / "metrics.tsv")] == [2, 4, 5]
    snaps = sorted(p.name for p in ctx.ckpt_dir.glob("ema_step_*.pt"))
    assert snaps == ["ema_step_000002.pt", "ema_step_000004.pt", "ema_step_000005.pt"]
    snap = load_checkpoint(ctx.ckpt_dir / "ema_step_000004.pt")
    assert snap["step"] == 4 and snap["metrics"]["body_dice"] == state.history[1]["body_dice"]
    assert state.best == best_of(state.history)
    latest = load_checkpoint(ctx.ckpt_dir / "latest.pt")
    assert latest["step"] == 5 and load_checkpoint(ctx.ckpt_dir / "latest.prev.pt")["step"] == 3
    assert latest["fingerprint"] == ctx.fingerprint and len(latest["history"]) == 3


def test_a_stop_signal_checkpoints_off_schedule_records_it_and_exits_to_be_resumed(toy_run):
    ctx, state = toy_run(steps=100, sample_every=50, eval_every=50, checkpoint_every=50)
    stop = StopFlag()
    run_hooks(ctx, state, [1], stop)
    assert not (ctx.ckpt_dir / "latest.pt").exists()  # nothing due at step 1
    stop.signal = signal.SIGUSR1
    with pytest.raises(SystemExit) as exc:
        run_hooks(ctx, state, [2], stop)
    assert exc.value.code == INTERRUPTED_EXIT
    assert load_checkpoint(ctx.ckpt_dir / "latest.pt")["step"] == 2
    (job,) = read_tsv(ctx.run_dir / "jobs.tsv")
    assert (job["event"], job["step"]) == ("stopped", "2") and job["detail"].startswith("SIGUSR1")
    assert not list(ctx.ckpt_dir.glob("ema_step_*.pt"))  # a stop is no validation step
