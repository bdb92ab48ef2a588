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


class _Oracle(torch.nn.Module):
    """A stand-in generator that returns given images, in order, for the label maps it is fed."""

    z_dim, spatial_noise = 1, False

    def __init__(self, images: torch.Tensor) -> None:
        super().__init__()
        self.images, self.at = images, 0

    def noise(self, batch, height, width, generator=None, device=None):
        return torch.zeros(batch, 1)

    def forward(self, onehot, z):
        out = self.images[self.at : self.at + len(onehot)]
        self.at += len(onehot)
        return out


def _mr_slices(tmp_path, seed, cases=2):
    import numpy as np

    from medsynth.data.labels import LabelTable
    from medsynth.data.phantom import PHANTOM_LABELS, make_case
    from medsynth.data.preprocess import PreprocessSettings, preprocess_case
    from medsynth.data.slicing import SliceSettings, slice_case
    from medsynth.io.nifti import load_volume, save_volume
    from medsynth.train.run import load_slices

    table = LabelTable.from_config([{"name": n, "values": [v]} for v, n in sorted(PHANTOM_LABELS.items())])
    files = []
    for i in range(cases):
        case = make_case(i, seed=seed, shape=(96, 96, 10), spacing=(4.0, 4.0, 6.0))
        d = tmp_path / f"s{seed}_{i}"
        save_volume(d / "mr.nii.gz", case.mr, case.affine)
        save_volume(d / "label.nii.gz", case.label, case.affine)
        preprocess_case("c", d / "mr.nii.gz", d / "label.nii.gz", d / "pre", table, PreprocessSettings("MR", None))
        vols = [load_volume(d / "pre" / f"{n}.nii.gz").array for n in ("image", "label", "mask")]
        files.append(slice_case(vols[0].astype(np.float32), *vols[1:], SliceSettings(96)).save(
            d / f"case{i}" / "slices.npz"))
    return load_slices(files), table.num_classes


@pytest.mark.parametrize("reference_seed", [1, 2], ids=["same patients", "other patients"])
def test_unpaired_selection_prefers_the_perfect_generator_to_one_that_paints_dark_tissue(tmp_path, reference_seed):
    """demo-unpaired selects by intensity_w1: the generator that renders MR as it is must win over one
    that paints lung air, bone cortex and bowel gas grey (which the old W1 preferred)."""
    from medsynth.train.loop import evaluate

    val, num_classes = _mr_slices(tmp_path, seed=1)
    reference, _ = _mr_slices(tmp_path, seed=reference_seed)  # seed 2: no pixel-aligned reference
    perfect = val.images.float()
    grey = perfect.clone()
    grey[(val.masks > 0) & (grey < -0.8)] = -0.3
    rows = []
    for step, images in ((10, grey), (20, perfect)):
        metrics = evaluate(_Oracle(images), val, reference, num_classes, "unpaired", 0, 8, torch.device("cpu"),
                           -0.95)
        rows.append({"step": step, **metrics})
    run = tmp_path / "run"
    write_tsv(run / "metrics.tsv", rows, ["step", "body_dice", "intensity_w1"])
    write_tsv(run / "checkpoints.tsv", [{"step": r["step"], "checkpoint": f"checkpoints/{r['step']}.pt"}
                                        for r in rows], ["step", "checkpoint"])
    for r in rows:
        save_checkpoint(run / "checkpoints" / f"{r['step']}.pt", {"ema": {}, "model": {}, "num_classes": 3})
    assert select_checkpoint(run, "intensity_w1", run / "s.json", run / "g.pt")["step"] == 20
    assert rows[1]["body_dice"] == pytest.approx(1.0, abs=1e-4)  # the old definition: 0.97
    if reference_seed == 1:
        assert rows[1]["intensity_w1"] == 0.0  # a perfect generator against its own images
