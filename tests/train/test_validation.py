"""The validation history follows what it depends on: recomputed from the EMA snapshots, never retrained."""

import dataclasses
import hashlib
import logging
import math

import pytest
import torch

from medsynth.io.tables import parse_float, read_tsv
from medsynth.metrics import fid as F
from medsynth.metrics.perceptual import save_real_stats
from medsynth.models.registry import ModelSpec
from medsynth.io.checkpoint import load_checkpoint, save_checkpoint
from medsynth.train.loop import TrainSettings, train

SPEC = ModelSpec(g_channels=(16, 16, 8), d_channels=(8, 16), z_dim=4, spade_hidden=8)
SETTINGS = TrainSettings(steps=6, batch_size=2, eval_every=3, sample_every=3, checkpoint_every=3, val_max_slices=4,
                         device="cpu", ema_decay=0.9)


def perceptual(weights_dir):
    return {"perceptual": "auto", "weights_dir": str(weights_dir), "batch_size": 8, "kid_subsets": 5,
            "kid_subset_size": 4}


def training_state(run_dir):
    """What training produced: the weights of latest.pt and of every snapshot, the loss rows."""
    state = load_checkpoint(run_dir / "checkpoints" / "latest.pt")
    snaps = sorted((run_dir / "checkpoints").glob("ema_step_*.pt"))
    return {"step": state["step"], "G": digest(state["G"]), "ema": digest(state["ema"]),
            "losses": (run_dir / "losses.tsv").read_text(),
            "snapshots": {p.name: digest(load_checkpoint(p)["ema"]) for p in snaps}}


def digest(state):
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode())
        h.update(state[key].contiguous().numpy().tobytes())
    return h.hexdigest()


@pytest.fixture
def quick_fid(monkeypatch):
    """FID on the first 64 Inception features: scipy's sqrtm of a singular 2048 x 2048 product
    takes 10-80 s on two CPU cores, and these tests are about which values get computed."""
    full = F.frechet_distance
    monkeypatch.setattr(F, "frechet_distance", lambda m1, s1, m2, s2, root2=None: full(m1[:64], s1[:64, :64], m2[:64],
                                                                                       s2[:64, :64]))


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # 4 images: singular covariances
def test_real_statistics_that_become_available_recompute_fid_for_every_step(tmp_path, toy_set, random_weights_dir,
                                                                            quick_fid, caplog):
    stats, run_dir = tmp_path / "inception_val.npz", tmp_path / "run"
    without = perceptual(tmp_path / "no-weights")
    assert not save_real_stats(toy_set.images.float(), stats, without, torch.device("cpu"))
    train(SETTINGS, 3, toy_set, toy_set, run_dir, spec=SPEC, perceptual=without, real_stats=stats)
    first = read_tsv(run_dir / "metrics.tsv")
    assert [r["fid"] for r in first] == ["NA", "NA"]
    trained = training_state(run_dir)

    # The weights are placed and the statistics computed: Snakemake reruns the finished training.
    weights = perceptual(random_weights_dir)
    assert save_real_stats(toy_set.images[:4].float(), stats, weights, torch.device("cpu"))
    with caplog.at_level(logging.INFO, logger="medsynth.train"):
        train(SETTINGS, 3, toy_set, toy_set, run_dir, spec=SPEC, perceptual=weights, real_stats=stats)
    rows = read_tsv(run_dir / "metrics.tsv")
    assert [int(r["step"]) for r in rows] == [3, 6]
    assert all(math.isfinite(parse_float(r["fid"])) and math.isfinite(parse_float(r["kid"])) for r in rows), rows
    assert "recomputing the validation metrics of 2 step(s) (3, 6)" in caplog.text
    assert "Inception statistics" in caplog.text  # says why
    assert read_tsv(run_dir / "live" / "metrics.tsv") == rows
    for a, b in zip(first, rows):  # validation on the snapshot gives the values training measured
        assert float(a["ssim"]) == pytest.approx(float(b["ssim"]), abs=1e-5)
    state = load_checkpoint(run_dir / "checkpoints" / "latest.pt")
    assert state["best"]["fid"]["step"] in (3, 6) and all(math.isfinite(h["fid"]) for h in state["history"])
    assert training_state(run_dir) == trained  # no retraining: same weights, no new loss rows
    assert all(math.isfinite(load_checkpoint(run_dir / f"checkpoints/ema_step_{s:06d}.pt")["metrics"]["fid"])
               for s in (3, 6))

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="medsynth.train"):
        train(SETTINGS, 3, toy_set, toy_set, run_dir, spec=SPEC, perceptual=weights, real_stats=stats)
    assert "recomputing" not in caplog.text  # the same identity: the history stands
    assert read_tsv(run_dir / "metrics.tsv") == rows


def test_paired_validation_pairs_each_fake_with_its_row_of_the_real_statistics(tmp_path, make_toy_slices, monkeypatch):
    """The real statistics are of the whole val set; validation generates from ``val_max_slices`` of its
    slices: KID gets their rows as the partners of the fakes (a perfect generator then reads 0,
    ``test_perceptual``), in the order the fakes were generated."""
    import numpy as np

    from medsynth.data.slice_set import evenly_spaced_rows
    from medsynth.train import validation

    val = make_toy_slices(n=10)
    calls = []

    def recording(fake, real_stats, settings, device, partner=None, **kwargs):
        calls.append((len(fake), partner))
        return {"fid": 1.0, "kid": 0.5}

    monkeypatch.setattr(validation, "perceptual_scores", recording)
    stats = tmp_path / "inception_val.npz"
    np.savez(stats, available=True)
    train(SETTINGS, 3, val, val, tmp_path / "run", spec=SPEC, perceptual=perceptual(tmp_path / "w"), real_stats=stats)
    expected = evenly_spaced_rows(10, SETTINGS.val_max_slices).numpy()
    assert len(calls) == 2 and expected.tolist() == [0, 3, 6, 9]
    for n, partner in calls:
        assert n == 4 and np.array_equal(partner, expected)


def test_a_new_metrics_version_recomputes_when_resuming_and_training_continues(tmp_path, toy_set, monkeypatch,
                                                                               caplog):
    from medsynth.train import validation

    train(dataclasses.replace(SETTINGS, steps=3), 3, toy_set, toy_set, tmp_path, spec=SPEC)
    before = read_tsv(tmp_path / "metrics.tsv")
    monkeypatch.setattr(validation, "METRICS_VERSION", validation.METRICS_VERSION + 1)
    with caplog.at_level(logging.INFO, logger="medsynth.train"):
        train(SETTINGS, 3, toy_set, toy_set, tmp_path, spec=SPEC)
    assert "recomputing the validation metrics of 1 step(s) (3)" in caplog.text
    assert "metrics' version" in caplog.text
    rows = read_tsv(tmp_path / "metrics.tsv")
    assert [int(r["step"]) for r in rows] == [3, 6]
    assert float(rows[0]["ssim"]) == pytest.approx(float(before[0]["ssim"]), abs=1e-5)
    assert load_checkpoint(tmp_path / "checkpoints" / "latest.pt")["validation"]["metrics_version"] == \
        validation.METRICS_VERSION


def test_a_new_mask_threshold_recomputes_body_dice_without_retraining(tmp_path, toy_set, caplog):
    """train.mask_threshold only decides what body Dice counts as tissue: not a reason to retrain."""
    run_dir = tmp_path / "run"
    train(SETTINGS, 3, toy_set, toy_set, run_dir, spec=SPEC)
    trained, first = training_state(run_dir), read_tsv(run_dir / "metrics.tsv")
    strict = dataclasses.replace(SETTINGS, mask_threshold=0.95)  # almost nothing is tissue
    with caplog.at_level(logging.INFO, logger="medsynth.train"):
        train(strict, 3, toy_set, toy_set, run_dir, spec=SPEC)
    rows = read_tsv(run_dir / "metrics.tsv")
    assert "train.mask_threshold" in caplog.text and "recomputing" in caplog.text
    assert training_state(run_dir) == trained  # same run, resumed, not moved to stale-*
    assert not list(run_dir.glob("stale-*"))
    assert all(float(b["body_dice"]) < float(a["body_dice"]) for a, b in zip(first, rows))


def test_a_new_val_max_slices_recomputes_the_history_without_retraining(tmp_path, toy_set, caplog):
    """train.val_max_slices picks which slices validation generates from: what validation measures, not what
    the run learns. A month-long run must not restart from step 0 for it."""
    run_dir = tmp_path / "run"
    train(SETTINGS, 3, toy_set, toy_set, run_dir, spec=SPEC)
    trained, first = training_state(run_dir), read_tsv(run_dir / "metrics.tsv")
    fewer = dataclasses.replace(SETTINGS, val_max_slices=2)
    with caplog.at_level(logging.INFO, logger="medsynth.train"):
        train(fewer, 3, toy_set, toy_set, run_dir, spec=SPEC)
    assert "recomputing the validation metrics of 2 step(s)" in caplog.text and "the slices validated" in caplog.text
    assert training_state(run_dir) == trained and not list(run_dir.glob("stale-*"))
    rows = read_tsv(run_dir / "metrics.tsv")
    assert [r["step"] for r in rows] == [r["step"] for r in first] and rows != first  # 2 slices, not 4


def test_a_run_checkpointed_before_the_validation_slices_left_the_fingerprint_resumes_as_it_was(tmp_path, toy_set,
                                                                                               caplog):
    """An upgrade restarts no training and validates no snapshot again: a checkpoint with the fingerprint of
    before (validation slices in it, no val_slices in its validation identity) is this run."""
    from medsynth.train.context import build_context

    run_dir = tmp_path / "run"
    train(dataclasses.replace(SETTINGS, steps=3), 3, toy_set, toy_set, run_dir, spec=SPEC)
    ctx = build_context(SETTINGS, 3, toy_set, toy_set, run_dir, SPEC)
    latest = run_dir / "checkpoints" / "latest.pt"
    old = load_checkpoint(latest)
    assert old["fingerprint"] == ctx.fingerprint != ctx.legacy_fingerprint
    validation = {k: v for k, v in old["validation"].items() if k != "val_slices"}
    save_checkpoint(latest, {**old, "fingerprint": ctx.legacy_fingerprint, "validation": validation})
    with caplog.at_level(logging.INFO, logger="medsynth.train"):
        train(SETTINGS, 3, toy_set, toy_set, run_dir, spec=SPEC)
    assert "resuming" in caplog.text and "recomputing" not in caplog.text and not list(run_dir.glob("stale-*"))
    now = load_checkpoint(latest)
    assert now["step"] == 6 and now["fingerprint"] == ctx.fingerprint
    assert now["validation"]["val_slices"] == ctx.validation["val_slices"]


def test_the_documented_disk_use_of_the_snapshots_is_oasis_256s():
    """Every validation keeps an EMA snapshot, none deleted: the docs state what that costs, and the number
    must be the preset's (a month of training at eval_every 1000 keeps 200 of them)."""
    from pathlib import Path

    from medsynth.models import get_preset
    from medsynth.models.registry import build_generator

    G = build_generator(get_preset("oasis-256"), 10)
    mb = round(sum(v.numel() * v.element_size() for v in G.state_dict().values()) / 1e6)
    repo = Path(__file__).resolve().parents[2]
    for doc in ("docs/architecture.md", "docs/how-to/slurm-and-gpus.md", "config/autopet.yaml"):
        text = " ".join((repo / doc).read_text(encoding="utf-8").split())
        assert f"{mb} MB" in text and "kept" in text, doc
    assert f"{round(40 * mb / 1000)} GB" in " ".join((repo / "docs/architecture.md").read_text().split())


def test_the_best_step_breaks_ties_as_selection_does(tmp_path):
    """Equal validation scores: the later step, which selection picks too (more training, the same score), so
    ``medsynth info``'s best names the generator selection ships; NaN is never best."""
    from medsynth.io.tables import write_tsv
    from medsynth.sharing.selection import select_checkpoint
    from medsynth.train.validation import best_of

    nan = float("nan")
    history = [{"step": 3, "ssim": 0.8, "fid": nan}, {"step": 6, "ssim": 0.8, "fid": 12.0},
               {"step": 9, "ssim": 0.7, "fid": nan}]
    best = best_of(history)
    assert best["ssim"] == {"value": 0.8, "step": 6} and best["fid"] == {"value": 12.0, "step": 6}
    assert "rmse" not in best
    rows = [{"step": h["step"], "ssim": h["ssim"]} for h in history]
    write_tsv(tmp_path / "metrics.tsv", rows, ["step", "ssim"])
    write_tsv(tmp_path / "checkpoints.tsv", [{"step": h["step"], "checkpoint": f"ckpt/{h['step']}.pt"} for h in history],
              ["step", "checkpoint"])
    with pytest.raises(Exception, match="6.pt"):  # it goes for step 6's snapshot (absent here)
        select_checkpoint(tmp_path, "ssim", tmp_path / "selected.json", tmp_path / "generator.pt")
