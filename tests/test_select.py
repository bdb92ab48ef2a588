import json

import pytest
import torch

from medsynth.io.tables import write_tsv
from medsynth.select import select_checkpoint
from medsynth.train.checkpoint import load_checkpoint, save_checkpoint


@pytest.fixture
def run_dir(tmp_path):
    rows = [{"step": 10, "ssim": 0.2, "psnr": 10.0, "rmse": 0.5},
            {"step": 20, "ssim": 0.6, "psnr": 9.0, "rmse": 0.3},
            {"step": 30, "ssim": 0.4, "psnr": 12.0, "rmse": 0.4}]
    write_tsv(tmp_path / "metrics.tsv", rows, ["step", "ssim", "psnr", "rmse"])
    write_tsv(tmp_path / "checkpoints.tsv",
              [{"step": r["step"], "checkpoint": f"checkpoints/ema_step_{r['step']:06d}.pt"} for r in rows],
              ["step", "checkpoint"])
    for r in rows:
        save_checkpoint(tmp_path / "checkpoints" / f"ema_step_{r['step']:06d}.pt",
                        {"ema": {"w": torch.full((1,), float(r["step"]))}, "model": {}, "num_classes": 3})
    return tmp_path


@pytest.mark.parametrize("metric,step,runner", [("ssim", 20, 30), ("psnr", 30, 10), ("rmse", 20, 30)])
def test_picks_by_metric_and_direction(run_dir, metric, step, runner):
    out = select_checkpoint(run_dir, metric, run_dir / "sel.json", run_dir / "gen.pt")
    assert out["step"] == step and out["runner_up"]["step"] == runner
    assert json.loads((run_dir / "sel.json").read_text())["step"] == step
    exported = load_checkpoint(run_dir / "gen.pt")
    assert exported["ema"]["w"].item() == step  # the chosen step's EMA weights, not the latest
    assert metric in out["reason"]


def test_unknown_metric_and_missing_values(run_dir):
    with pytest.raises(KeyError, match="fidd"):
        select_checkpoint(run_dir, "fidd", run_dir / "s.json", run_dir / "g.pt")
    write_tsv(run_dir / "metrics.tsv", [{"step": 10, "ssim": float("nan")}], ["step", "ssim"])
    with pytest.raises(ValueError, match="no finite 'ssim'"):
        select_checkpoint(run_dir, "ssim", run_dir / "s.json", run_dir / "g.pt")


def test_falls_back_when_the_metric_was_not_computed_and_says_so(run_dir):
    # metrics.tsv has no fid column at all (weights were unavailable during training)
    out = select_checkpoint(run_dir, "fid", run_dir / "s.json", run_dir / "g.pt", fallback="ssim")
    assert out["step"] == 20 and out["metric"] == "ssim" and out["fallback_used"] is True
    assert out["requested_metric"] == "fid" and "fid was not computed" in out["reason"]
    with pytest.raises(ValueError, match="no finite 'fid'"):
        select_checkpoint(run_dir, "fid", run_dir / "s.json", run_dir / "g.pt")
