"""A non-finite loss that recurs from one checkpoint (medsynth.train.failures): recorded, replayed once, then
refused before anything trains; a failure elsewhere, a newer checkpoint or a restarted run trains on."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from toy_run import TOY_SPEC, toy_settings

import medsynth.train.loop as loop_module
from medsynth.io.checkpoint import load_checkpoint
from medsynth.io.jsonfile import read_json
from medsynth.train import hooks as hooks_module
from medsynth.train import iteration as iteration_module
from medsynth.train.failures import RECORD, RepeatedNonFinite, note_failure, resume_point
from medsynth.train.loop import NonFiniteLoss, NonFiniteWeights, train


LABELS = [{"name": "background", "values": [0]}, {"name": "liver", "values": [1]}]


def run(tmp, data, **kw):
    return train(toy_settings(**kw), 3, data, data, tmp, spec=TOY_SPEC)


@pytest.fixture
def nan_at(monkeypatch):
    """``nan_at.update({steps})``: those steps' loss_d_fake is NaN, caught by the real check (at any resume)."""
    steps: set[int] = set()
    real = iteration_module.check_finite

    def poisoned(row, step, last_good):
        return real({**row, "loss_d_fake": math.nan} if step in steps else row, step, last_good)

    monkeypatch.setattr(iteration_module, "check_finite", poisoned)
    return steps


def record(run_dir):
    return read_json(run_dir / "checkpoints" / RECORD)


def fail(run_dir, data, **kw):
    with pytest.raises(NonFiniteLoss) as exc:
        run(run_dir, data, **kw)
    return exc.value


def test_a_non_finite_loss_is_recorded_counted_and_refused_at_the_third_start(tmp_path, toy_set, nan_at,
                                                                                monkeypatch, caplog):
    run(tmp_path, toy_set, steps=3)
    nan_at.add(5)
    exc = fail(tmp_path, toy_set)
    assert type(exc) is NonFiniteLoss  # the failure itself is unchanged: a normal error, not INTERRUPTED_EXIT
    first = record(tmp_path)
    assert (first["count"], first["failed_step"], first["checkpoint_step"]) == (1, 5, 3)
    assert "step 5: loss_d_fake=nan" in first["message"]
    assert first["resume_point"] == resume_point(tmp_path / "checkpoints")
    assert not (tmp_path / "checkpoints" / (RECORD + ".part")).exists()
    with caplog.at_level("ERROR", logger="medsynth.train.failures"):
        fail(tmp_path, toy_set)  # the one replay: a NaN on a GPU may be transient
    assert record(tmp_path)["count"] == 2 and "the next start is refused" in caplog.text
    losses = (tmp_path / "live" / "losses.tsv").read_text()
    calls = []
    monkeypatch.setattr(loop_module, "new_state", lambda *a, **k: calls.append("new_state"))
    monkeypatch.setattr(loop_module, "iterate", lambda *a, **k: calls.append("iterate"))
    with pytest.raises(RepeatedNonFinite) as refused:
        run(tmp_path, toy_set)
    message = str(refused.value)
    assert str(tmp_path / "checkpoints" / RECORD) in message and "2 times at step 5" in message
    assert "checkpoint of step 3" in message and "Lower the learning rates" in message and "delete" in message
    assert not isinstance(refused.value, (SystemExit, NonFiniteLoss))  # exit 1, not 75: no reason to resume
    assert calls == []  # refused before the networks were built, no step taken
    assert (tmp_path / "live" / "losses.tsv").read_text() == losses
    assert load_checkpoint(tmp_path / "checkpoints" / "latest.pt")["step"] == 3
    # Deleting the record, as the message says, allows one more replay.
    (tmp_path / "checkpoints" / RECORD).unlink()
    monkeypatch.undo()
    nan_at.clear()
    assert run(tmp_path, toy_set)["steps"] == 6


def test_non_finite_weights_count_as_the_same_failure(tmp_path, toy_set, monkeypatch):
    run(tmp_path, toy_set, steps=3)
    real = hooks_module.check_weights

    def poisoned(nets, step, last_good):
        if step == 6:  # as a non-finite gradient would leave G after a step with finite losses
            with torch.no_grad():
                next(nets.G.parameters()).fill_(math.nan)
        return real(nets, step, last_good)

    monkeypatch.setattr(hooks_module, "check_weights", poisoned)
    for _ in range(2):
        with pytest.raises(NonFiniteWeights):
            run(tmp_path, toy_set)
    assert (record(tmp_path)["count"], record(tmp_path)["failed_step"]) == (2, 6)
    assert "non-finite weights in G" in record(tmp_path)["message"]
    monkeypatch.undo()
    with pytest.raises(RepeatedNonFinite, match="2 times at step 6"):
        run(tmp_path, toy_set)


def test_a_failure_at_another_step_counts_afresh(tmp_path, toy_set, nan_at):
    run(tmp_path, toy_set, steps=3)
    nan_at.add(5)
    fail(tmp_path, toy_set)
    nan_at.clear()
    nan_at.add(4)  # the replay fails earlier: not deterministic
    fail(tmp_path, toy_set)
    assert (record(tmp_path)["count"], record(tmp_path)["failed_step"]) == (1, 4)
    fail(tmp_path, toy_set)  # a second replay is allowed: this failure has been seen once only
    assert record(tmp_path)["count"] == 2


def test_a_replay_that_passes_the_failure_deletes_the_record(tmp_path, toy_set, nan_at):
    run(tmp_path, toy_set, steps=3)
    nan_at.add(5)
    fail(tmp_path, toy_set, steps=9)
    nan_at.clear()  # transient: the replay passes step 5 and writes the checkpoint of step 6
    assert run(tmp_path, toy_set, steps=9)["steps"] == 9
    assert not (tmp_path / "checkpoints" / RECORD).exists()


def test_a_failure_from_a_newer_checkpoint_is_not_refused(tmp_path, toy_set, nan_at):
    """The replay of a failure at step 5 reaches the checkpoint of step 6 and fails at step 8; failing there
    once more from step 6 is a second occurrence, not a third."""
    run(tmp_path, toy_set, steps=3)
    nan_at.add(5)
    fail(tmp_path, toy_set, steps=9)
    nan_at.clear()
    nan_at.add(8)
    fail(tmp_path, toy_set, steps=9)
    assert (record(tmp_path)["count"], record(tmp_path)["checkpoint_step"]) == (1, 6)
    fail(tmp_path, toy_set, steps=9)
    assert record(tmp_path)["count"] == 2
    with pytest.raises(RepeatedNonFinite, match="checkpoint of step 6"):
        run(tmp_path, toy_set, steps=9)


def test_a_checkpoint_other_than_the_recorded_one_is_not_refused(tmp_path, toy_set, nan_at):
    """latest.pt replaced since the failures (restored from a backup, written by a stop signal): another start."""
    run(tmp_path, toy_set, steps=3)
    nan_at.add(5)
    fail(tmp_path, toy_set)
    fail(tmp_path, toy_set)
    ckpt = tmp_path / "checkpoints" / "latest.pt"
    copy = ckpt.with_name("copy.pt")
    copy.write_bytes(ckpt.read_bytes())
    copy.replace(ckpt)  # the same content and size, another file (as a restore or a new checkpoint writes it)
    nan_at.clear()
    assert run(tmp_path, toy_set)["steps"] == 6


def test_a_failure_before_the_first_checkpoint_is_refused_from_the_start(tmp_path, toy_set, nan_at):
    nan_at.add(2)
    fail(tmp_path, toy_set)
    fail(tmp_path, toy_set)
    assert record(tmp_path)["checkpoint_step"] is None
    with pytest.raises(RepeatedNonFinite, match=r"the start of training \(no checkpoint\)"):
        run(tmp_path, toy_set)


def test_a_restarted_run_does_not_inherit_the_record(tmp_path, toy_set, nan_at):
    """Lowering a learning rate, as the refusal says, starts afresh: the old run and its record go to stale-*."""
    run(tmp_path, toy_set, steps=3)
    nan_at.add(5)
    fail(tmp_path, toy_set)
    fail(tmp_path, toy_set)
    nan_at.clear()
    assert run(tmp_path, toy_set, lr_g=5e-5)["steps"] == 6
    (stale,) = tmp_path.glob("stale-*")
    assert read_json(stale / "checkpoints" / RECORD)["count"] == 2
    assert not (tmp_path / "checkpoints" / RECORD).exists()


def test_a_restarted_run_without_a_checkpoint_ignores_the_old_record(tmp_path, toy_set, nan_at):
    """No checkpoint to move aside: the record stays, but names another run's fingerprint."""
    nan_at.add(2)
    fail(tmp_path, toy_set)
    fail(tmp_path, toy_set)
    fail(tmp_path, toy_set, lr_g=5e-5)
    assert record(tmp_path)["count"] == 1


def test_the_record_is_refused_before_the_slices_are_read(tmp_path, monkeypatch):
    """run_experiment refuses from the inputs' digest; other settings leave it to the run's fingerprint."""
    import medsynth.train.run as run_module

    np.savez(tmp_path / "a.npz", z=np.arange(2))
    files = [tmp_path / "a.npz"]
    settings = {"steps": 6}
    inputs = run_module.inputs_digest(settings, LABELS, files + files)
    for _ in range(2):
        note_failure(tmp_path / "run" / "checkpoints", "f", inputs, None, 2, "step 2: loss_d_fake=nan")
    loaded, trained = [], []
    monkeypatch.setattr(run_module, "load_slices", lambda *a: loaded.append(a))
    monkeypatch.setattr(run_module, "unlearnt_classes", lambda *a: [])
    monkeypatch.setattr(run_module, "train", lambda *a, **k: trained.append(k) or {})
    with pytest.raises(RepeatedNonFinite, match=r"nonfinite\.json: training stopped 2 times at step 2"):
        run_module.run_experiment(settings, LABELS, tmp_path / "run", files, files)
    assert loaded == [] and trained == []
    run_module.run_experiment({"steps": 6, "lr_g": 5e-5}, LABELS, tmp_path / "run", files, files)
    assert loaded and trained[0]["inputs_id"] not in ("", inputs)
    (tmp_path / "a.npz").write_bytes((tmp_path / "a.npz").read_bytes() + b"\0")  # the slices changed
    assert run_module.inputs_digest(settings, LABELS, files + files) != inputs


def test_an_unreadable_record_is_ignored(tmp_path, toy_set, nan_at, caplog):
    run(tmp_path, toy_set, steps=3)
    (tmp_path / "checkpoints" / RECORD).write_text("{")
    nan_at.add(5)
    with caplog.at_level("WARNING"):
        fail(tmp_path, toy_set)
    assert "not a JSON file" in caplog.text and record(tmp_path)["count"] == 1
