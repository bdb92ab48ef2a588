"""An unreadable latest.pt: resume from the checkpoint kept before it, or say what to do."""

import logging

import pytest
import torch

from medsynth.io.tables import read_tsv
from medsynth.models.registry import ModelSpec
from medsynth.io.checkpoint import load_checkpoint, save_checkpoint
from medsynth.train.loop import TrainSettings, train

SPEC = ModelSpec(g_channels=(16, 16, 8), d_channels=(8, 16), z_dim=4, spade_hidden=8)


def run(tmp, data, steps):
    s = TrainSettings(steps=steps, batch_size=2, eval_every=3, sample_every=3, checkpoint_every=3, val_max_slices=4,
                      device="cpu", ema_decay=0.9)
    return train(s, 3, data, data, tmp, spec=SPEC)


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_truncated_latest_resumes_from_the_previous_checkpoint_with_a_warning(tmp_path, toy_set, caplog):
    run(tmp_path / "straight", toy_set, steps=9)
    run_dir = tmp_path / "run"
    run(run_dir, toy_set, steps=6)  # checkpoints at steps 3 and 6
    ckpt = run_dir / "checkpoints"
    truncate(ckpt / "latest.pt")
    with caplog.at_level(logging.WARNING, logger="medsynth.train.resume"):
        run(run_dir, toy_set, steps=9)
    warning = next(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert str(ckpt / "latest.pt") in warning and str(ckpt / "latest.prev.pt") in warning and "step 3" in warning
    jobs = [(r["event"], int(r["step"])) for r in read_tsv(run_dir / "jobs.tsv")]
    assert jobs == [("started", 0), ("finished", 6), ("resumed", 3), ("finished", 9)]
    assert [int(r["step"]) for r in read_tsv(run_dir / "losses.tsv")] == list(range(1, 10))
    # The truncated file was replaced, not kept as the previous checkpoint.
    assert load_checkpoint(ckpt / "latest.pt")["step"] == 9 and load_checkpoint(ckpt / "latest.prev.pt")["step"] == 6
    # Steps 4..9 ran again from step 3's state: the same weights as a run never interrupted.
    a, b = load_checkpoint(tmp_path / "straight/checkpoints/latest.pt"), load_checkpoint(ckpt / "latest.pt")
    for net in ("G", "D", "ema"):
        assert all(torch.equal(a[net][k], b[net][k]) for k in a[net]), net


def test_latest_missing_after_a_crash_between_the_renames_resumes_from_the_previous(tmp_path, caplog):
    from medsynth.train.resume import LatestCheckpoint

    latest = LatestCheckpoint(tmp_path)
    latest.save({"step": 3})
    latest.save({"step": 6})
    assert load_checkpoint(tmp_path / "latest.prev.pt")["step"] == 3
    (tmp_path / "latest.pt").unlink()
    with caplog.at_level(logging.WARNING, logger="medsynth.train.resume"):
        assert LatestCheckpoint(tmp_path).load()["step"] == 3
    assert "checkpoint not found" in caplog.text


def test_neither_checkpoint_readable_says_how_to_start_afresh(tmp_path):
    from medsynth.train.resume import CheckpointsUnreadable, LatestCheckpoint

    for name in ("latest.pt", "latest.prev.pt"):
        save_checkpoint(tmp_path / name, {"step": 1, "x": torch.zeros(1000)})
        truncate(tmp_path / name)
    with pytest.raises(CheckpointsUnreadable) as exc:
        LatestCheckpoint(tmp_path).load()
    message = str(exc.value)
    assert "latest.pt" in message and "latest.prev.pt" in message and f"mv {tmp_path}" in message
    assert LatestCheckpoint(tmp_path / "new").load() is None  # a new run has neither


def test_resume_restores_a_matching_checkpoint_and_moves_another_runs_away(toy_run):
    from medsynth.train.iteration import iterate
    from medsynth.train.resume import LatestCheckpoint, resume
    from medsynth.train.state import checkpoint_payload

    ctx, state = toy_run()
    iterate(ctx, state, ctx.ckpt_dir / "latest.pt")
    LatestCheckpoint(ctx.ckpt_dir).save(checkpoint_payload(ctx, state))

    again, fresh = toy_run()
    resume(again, fresh, LatestCheckpoint(again.ckpt_dir))
    assert fresh.step == 1
    assert all(torch.equal(a, b) for a, b in zip(state.nets.G.parameters(), fresh.nets.G.parameters()))

    other, new = toy_run(lr_g=5e-4)  # another fingerprint
    resume(other, new, LatestCheckpoint(other.ckpt_dir))
    assert new.step == 0 and not (other.ckpt_dir / "latest.pt").exists()
    (stale,) = other.run_dir.glob("stale-*")
    assert load_checkpoint(stale / "checkpoints" / "latest.pt")["step"] == 1
