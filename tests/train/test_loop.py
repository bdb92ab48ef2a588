import math
import signal
import threading

import pytest
import torch

from medsynth.io.tables import read_tsv
from medsynth.models.registry import ModelSpec
from medsynth.train import step as step_module
from medsynth.io.checkpoint import load_checkpoint
from medsynth.train import iteration as iteration_module
from medsynth.train.loop import INTERRUPTED_EXIT, NonFiniteLoss, NonFiniteWeights, TrainSettings, train

SPEC = ModelSpec(g_channels=(16, 16, 8), d_channels=(8, 16), z_dim=4, spade_hidden=8)


def settings(**kw):
    base = dict(steps=6, batch_size=2, eval_every=3, sample_every=3, checkpoint_every=3, val_max_slices=4,
                device="cpu", ema_decay=0.9)
    return TrainSettings(**{**base, **kw})


def run(tmp, data, **kw):
    return train(settings(**kw), 3, data, data, tmp, spec=SPEC)


def test_outputs_and_tables(tmp_path, toy_set, caplog):
    summary = run(tmp_path, toy_set)
    assert summary["steps"] == 6
    losses = read_tsv(tmp_path / "losses.tsv")
    assert [int(r["step"]) for r in losses] == list(range(1, 7))
    metrics = read_tsv(tmp_path / "metrics.tsv")
    assert [int(r["step"]) for r in metrics] == [3, 6]
    assert all(math.isfinite(float(r[m])) for r in metrics for m in ("ssim", "psnr", "rmse"))
    assert [r["checkpoint"] for r in read_tsv(tmp_path / "checkpoints.tsv")] == [
        "checkpoints/ema_step_000003.pt", "checkpoints/ema_step_000006.pt"]
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "latest.pt")
    for key in ("step", "G", "D", "ema", "opt_g", "opt_d", "rng", "best", "history", "settings", "model", "version"):
        assert key in ckpt
    assert ckpt["step"] == 6 and len(ckpt["history"]) == 2
    assert (tmp_path / "samples" / "step_000006.png").stat().st_size > 0
    # train.steps lowered below the finished run's step: nothing trains, and the log says what is published.
    with caplog.at_level("WARNING", logger="medsynth.train.loop"):
        assert run(tmp_path, toy_set, steps=3)["steps"] == 6
    assert "train.steps is 3 but the run in" in caplog.text and "up to step 6 are published" in caplog.text
    assert [int(r["step"]) for r in read_tsv(tmp_path / "metrics.tsv")] == [3, 6]


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path, toy_set):
    run(tmp_path / "straight", toy_set, steps=6)
    run(tmp_path / "resumed", toy_set, steps=3)
    run(tmp_path / "resumed", toy_set, steps=6)  # same settings but more steps: continues from step 3
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "latest.pt")
    b = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "latest.pt")
    for net in ("G", "D", "ema"):
        for k in a[net]:
            assert torch.allclose(a[net][k], b[net][k], atol=1e-6), (net, k)
    straight = read_tsv(tmp_path / "straight" / "losses.tsv")
    resumed = read_tsv(tmp_path / "resumed" / "losses.tsv")
    assert [int(r["step"]) for r in resumed] == list(range(1, 7))
    # The batches and losses after the resume are bit-identical to the uninterrupted run's.
    for a_row, b_row in zip(straight, resumed):
        assert {k: v for k, v in a_row.items() if k != "seconds"} == {k: v for k, v in b_row.items() if k != "seconds"}
    for net in ("G", "D", "ema"):
        for k in a[net]:
            assert torch.equal(a[net][k], b[net][k]), (net, k)


def test_changed_settings_start_afresh_and_keep_the_old_run(tmp_path, toy_set):
    run(tmp_path, toy_set, steps=3)
    run(tmp_path, toy_set, steps=3, lr_g=5e-4)
    stale = list(tmp_path.glob("stale-*/checkpoints/latest.pt"))
    assert len(stale) == 1
    assert load_checkpoint(tmp_path / "checkpoints" / "latest.pt")["settings"]["lr_g"] == 5e-4


def test_a_run_started_afresh_keeps_the_old_runs_jobs_apart(tmp_path, toy_set):
    """jobs.tsv stayed behind when the old run moved to stale-*: the new run's model card counted the discarded
    run's jobs and wall time (2 jobs for a run of one)."""
    run(tmp_path, toy_set, steps=3)
    run(tmp_path, toy_set, steps=3, lr_g=5e-4)
    events = [(r["event"], int(r["step"])) for r in read_tsv(tmp_path / "jobs.tsv")]
    assert events == [("started", 0), ("finished", 3)]
    (stale,) = tmp_path.glob("stale-*")
    assert [(r["event"], int(r["step"])) for r in read_tsv(stale / "jobs.tsv")] == [("started", 0), ("finished", 3)]


def test_non_finite_loss_stops_naming_step_and_keeps_last_checkpoint(tmp_path, toy_set, monkeypatch):
    run(tmp_path, toy_set, steps=3)
    real = step_module.seg_ce_fake
    monkeypatch.setattr(step_module, "seg_ce_fake", lambda logits: real(logits) * float("nan"))
    with pytest.raises(NonFiniteLoss, match=r"step 4: loss_d_fake=nan"):
        run(tmp_path, toy_set, steps=6)
    assert load_checkpoint(tmp_path / "checkpoints" / "latest.pt")["step"] == 3


def test_non_finite_weights_after_a_finite_loss_write_no_checkpoint_or_snapshot(tmp_path, toy_set, monkeypatch):
    """A non-finite gradient makes Adam's update NaN while the step's loss was finite: at a checkpoint step the
    NaN networks replaced latest.pt (the good one became latest.prev.pt, every resume failed again at the
    next step) and the EMA snapshot held NaN weights."""
    run(tmp_path, toy_set, steps=3)
    real, calls = iteration_module.paired_step, {"n": 0}

    def poisoned(nets, *args, **kw):
        calls["n"] += 1
        if calls["n"] == 3:  # step 6, a validation and checkpoint step
            adam_step = nets.opt_g.step

            def nan_update(*a, **k):
                out = adam_step(*a, **k)
                with torch.no_grad():
                    next(nets.G.parameters()).fill_(float("nan"))
                return out

            monkeypatch.setattr(nets.opt_g, "step", nan_update)
        return real(nets, *args, **kw)

    monkeypatch.setattr(iteration_module, "paired_step", poisoned)
    with pytest.raises(NonFiniteWeights, match=r"step 6: non-finite weights in G, the EMA generator .*latest\.pt"):
        run(tmp_path, toy_set, steps=6)
    latest = load_checkpoint(tmp_path / "checkpoints" / "latest.pt")
    assert latest["step"] == 3 and all(torch.isfinite(v).all() for v in latest["G"].values())
    assert not (tmp_path / "checkpoints" / "ema_step_000006.pt").exists()
    assert [int(r["step"]) for r in read_tsv(tmp_path / "live" / "metrics.tsv")] == [3]


def test_sigusr1_writes_a_checkpoint_and_exits_for_requeue(tmp_path, toy_set, monkeypatch):
    real = step_module.seg_ce_fake
    calls = {"n": 0}

    def signalling(logits):
        calls["n"] += 1
        if calls["n"] == 2:  # during step 2, as SLURM would before a time limit
            signal.raise_signal(signal.SIGUSR1)
        return real(logits)

    monkeypatch.setattr(step_module, "seg_ce_fake", signalling)
    assert threading.current_thread() is threading.main_thread()
    with pytest.raises(SystemExit) as exc:
        run(tmp_path, toy_set, steps=100, checkpoint_every=50)
    assert exc.value.code == INTERRUPTED_EXIT
    assert load_checkpoint(tmp_path / "checkpoints" / "latest.pt")["step"] == 2
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL  # handler restored


def test_unknown_setting_is_named():
    with pytest.raises(KeyError, match="stpes"):
        TrainSettings.from_dict({"stpes": 3})


def test_unpaired_mode_trains_with_its_own_losses_and_metrics(tmp_path, toy_set):
    images = toy_set.__class__(toy_set.images.flip(-1), toy_set.labels, toy_set.masks, toy_set.case_ids, toy_set.z)
    s = settings(mode="unpaired", steps=4, eval_every=2, sample_every=4, checkpoint_every=2, r1_every=2)
    spec = ModelSpec(g_channels=(16, 16, 8), d_channels=(8, 16), w_channels=(8, 16), z_dim=4, spade_hidden=8)
    summary = train(s, 3, toy_set, toy_set, tmp_path, spec=spec, images_train=images, images_val=images)
    assert summary["steps"] == 4
    losses = read_tsv(tmp_path / "losses.tsv")
    assert {"loss_g_adv", "loss_g_seg", "loss_g_mask", "loss_d_seg", "loss_du", "loss_du_r1"} <= set(losses[0])
    r1 = [float(r["loss_du_r1"]) for r in losses]
    assert r1[0] == 0 and r1[1] > 0 and r1[2] == 0 and r1[3] > 0  # lazy R1 on every 2nd step only
    metrics = read_tsv(tmp_path / "metrics.tsv")
    assert all(r["ssim"] == "NA" for r in metrics)  # no pixel-aligned reference in unpaired mode
    assert all(0 <= float(r["body_dice"]) <= 1 and float(r["intensity_w1"]) >= 0 for r in metrics)
    assert "Du" in load_checkpoint(tmp_path / "checkpoints" / "latest.pt")
    with pytest.raises(ValueError, match="images_train"):
        train(s, 3, toy_set, toy_set, tmp_path / "other", spec=spec)


def test_slices_beyond_the_ram_budget_are_memory_mapped_with_the_same_content(tmp_path, make_toy_slices):
    import numpy as np

    from medsynth.data.slicing import CaseSlices
    from medsynth.data.slice_set import load_slices

    data = make_toy_slices(n=6, size=16)
    files = []
    for i, case in enumerate(["b", "a"]):
        sl = slice(3 * i, 3 * i + 3)
        f = tmp_path / case / "slices.npz"
        CaseSlices(data.images[sl, 0].numpy(), data.labels[sl].numpy().astype(np.uint8),
                   data.masks[sl, 0].numpy().astype(np.uint8), np.arange(3, dtype=np.int32),
                   np.zeros((3, 2), np.int32)).save(f)
        files.append(f)
    in_ram = load_slices(files, context_slices=1)
    spilled = load_slices(files, ram_gb=1e-9, spill_dir=tmp_path / "cache", context_slices=1)
    assert (tmp_path / "cache" / "images.npy").is_file() and (tmp_path / "cache" / "context.npy").is_file()
    assert in_ram.case_ids == spilled.case_ids == ["a"] * 3 + ["b"] * 3  # sorted by case id
    for name in ("images", "labels", "masks", "context"):
        assert torch.equal(getattr(in_ram, name), getattr(spilled, name))
    # Each slice's context: the maps below and above within its own case, its own map at an edge.
    assert torch.equal(spilled.context[3], torch.stack([spilled.labels[3], spilled.labels[4]]))
    assert torch.equal(spilled.context[2], torch.stack([spilled.labels[1], spilled.labels[2]]))
    real, labels, masks = spilled.batch(torch.tensor([0, 4]), torch.device("cpu"))
    assert real.dtype == torch.float32 and labels.dtype == torch.int64 and masks.shape == (2, 1, 16, 16)


@pytest.mark.parametrize("mode", ["paired", "unpaired"])
def test_training_with_context_slices_builds_and_stores_a_2_5d_generator(tmp_path, toy_set, mode):
    """train.context_slices widens G's label input, reaches the snapshots selection exports from,
    and makes another run identity (a 2D run is not resumed as a 2.5D one)."""
    kw = dict(steps=3, context_slices=1, mode=mode)
    b = dict(images_train=toy_set, images_val=toy_set) if mode == "unpaired" else {}
    summary = train(settings(**kw), 3, toy_set, toy_set, tmp_path / "ctx", spec=SPEC, **b)
    assert summary["steps"] == 3
    snap = load_checkpoint(tmp_path / "ctx" / "checkpoints" / "ema_step_000003.pt")
    assert snap["model"]["context_slices"] == 1
    assert snap["ema"]["fc.weight"].shape[1] == 3 * 3 + SPEC.z_dim
    assert math.isfinite(float(read_tsv(tmp_path / "ctx" / "metrics.tsv")[-1]["body_dice"]))
    train(settings(steps=1, mode=mode), 3, toy_set, toy_set, tmp_path / "2d", spec=SPEC, **b)
    plain = load_checkpoint(tmp_path / "2d" / "checkpoints" / "latest.pt")
    assert plain["fingerprint"] != load_checkpoint(tmp_path / "ctx" / "checkpoints" / "latest.pt")["fingerprint"]
