import json

import pytest
import torch

from medsynth.io.tables import read_tsv, write_tsv
from medsynth.models import build_generator
from medsynth.models.ema import EMA
from medsynth.models.registry import ModelSpec
from medsynth.sharing.selection import select_checkpoint
from medsynth.io.checkpoint import load_checkpoint, save_checkpoint
from medsynth.data.slice_set import one_hot

SPEC = ModelSpec(g_channels=(16, 16, 8), d_channels=(8, 16), z_dim=4, spade_hidden=8)


def ema_snapshot(step: int, refreshed: bool = True) -> dict:
    """An EMA generator after a few training-mode updates, as training snapshots it (refreshed)
    or as versions before the spectral-norm refresh did (not)."""
    torch.manual_seed(step)
    G = build_generator(SPEC, 3)
    ema = EMA(G, decay=0.5)
    for _ in range(3):
        with torch.no_grad():
            for p in G.parameters():
                p.add_(0.05 * torch.randn_like(p))
        G(one_hot(torch.randint(0, 3, (1, 16, 16)), 3))  # one power iteration, as a training step does
        ema.update(G)
    state = ema.state_dict()
    if refreshed:  # u, v := the top singular pair, by SVD
        for key in [k for k in state if k.endswith("weight_orig")]:
            u, _, vh = torch.linalg.svd(state[key].flatten(1))
            state[key[: -len("orig")] + "u"].copy_(u[:, 0])
            state[key[: -len("orig")] + "v"].copy_(vh[0])
    return {"step": step, "ema": state, "model": SPEC.to_dict(), "num_classes": 3}


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
        save_checkpoint(tmp_path / "checkpoints" / f"ema_step_{r['step']:06d}.pt", ema_snapshot(r["step"]))
    return tmp_path


def weights_only(state: dict) -> dict:
    """A state dict without spectral norm's power-iteration vectors."""
    return {k: v for k, v in state.items() if not k.endswith(("weight_u", "weight_v"))}


@pytest.mark.parametrize("metric,step,runner", [("ssim", 20, 30), ("psnr", 30, 10), ("rmse", 20, 30)])
def test_picks_by_metric_and_direction(run_dir, metric, step, runner):
    out = select_checkpoint(run_dir, metric, run_dir / "sel.json", run_dir / "gen.pt")
    assert out["step"] == step and out["runner_up"]["step"] == runner
    assert json.loads((run_dir / "sel.json").read_text())["step"] == step
    exported = weights_only(load_checkpoint(run_dir / "gen.pt")["ema"])
    chosen = weights_only(load_checkpoint(run_dir / f"checkpoints/ema_step_{step:06d}.pt")["ema"])
    other = weights_only(load_checkpoint(run_dir / f"checkpoints/ema_step_{runner:06d}.pt")["ema"])
    # The chosen step's EMA weights, not the latest, unchanged by the export.
    assert all(torch.equal(exported[k], chosen[k]) for k in chosen)
    assert not all(torch.equal(exported[k], other[k]) for k in other)
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


def _mr_slices(tmp_path, seed, prepare, cases=2):
    from medsynth.data.labels import LabelTable
    from medsynth.data.phantom import PHANTOM_LABELS, make_case
    from medsynth.io.nifti import save_volume
    from medsynth.data.slice_set import load_slices

    table = LabelTable.from_config([{"name": n, "values": [v]} for v, n in sorted(PHANTOM_LABELS.items())])
    files = []
    for i in range(cases):
        case = make_case(i, seed=seed, shape=(96, 96, 10), spacing=(4.0, 4.0, 6.0))
        d = tmp_path / f"s{seed}_{i}"
        save_volume(d / "mr.nii.gz", case.mr, case.affine)
        save_volume(d / "label.nii.gz", case.label, case.affine)
        slices = prepare(d / "pre", d / "mr.nii.gz", d / "label.nii.gz", table, "MR", 96)
        files.append(slices.save(d / f"case{i}" / "slices.npz"))
    return load_slices(files), table.num_classes


@pytest.mark.parametrize("reference_seed", [1, 2], ids=["same patients", "other patients"])
def test_unpaired_selection_prefers_the_perfect_generator_to_one_that_paints_dark_tissue(tmp_path, reference_seed,
                                                                                         slice_volumes):
    """demo-unpaired selects by intensity_w1: the generator that renders MR as it is must win over one
    that paints lung air, bone cortex and bowel gas grey (which the old W1 preferred)."""
    from medsynth.train.loop import evaluate

    val, num_classes = _mr_slices(tmp_path, 1, slice_volumes)
    reference, _ = _mr_slices(tmp_path, reference_seed, slice_volumes)  # seed 2: no pixel-aligned reference
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
        save_checkpoint(run / "checkpoints" / f"{r['step']}.pt", ema_snapshot(r["step"]))
    assert select_checkpoint(run, "intensity_w1", run / "s.json", run / "g.pt")["step"] == 20
    assert rows[1]["body_dice"] == pytest.approx(1.0, abs=1e-4)  # the old definition: 0.97
    if reference_seed == 1:
        assert rows[1]["intensity_w1"] == 0.0  # a perfect generator against its own images


def test_export_makes_an_unrefreshed_snapshots_spectral_norms_exact(run_dir, sigma_errors):
    """Snapshots written before training refreshed the EMA's spectral norms: the export refreshes them."""
    old = ema_snapshot(20, refreshed=False)
    assert max(sigma_errors(old["ema"]).values()) > 0.05  # the averaged u, v are far off
    save_checkpoint(run_dir / "checkpoints" / "ema_step_000020.pt", old)
    select_checkpoint(run_dir, "ssim", run_dir / "s.json", run_dir / "g.pt")
    exported = load_checkpoint(run_dir / "g.pt")["ema"]
    errors = sigma_errors(exported)
    assert len(errors) == 5 and max(errors.values()) < 0.01, errors  # 2 blocks x 2 convs, 1 shortcut
    assert all(torch.equal(exported[k], v) for k, v in weights_only(old["ema"]).items())


def test_a_trained_runs_snapshots_and_export_use_exact_spectral_norms(tmp_path, toy_set, sigma_errors):
    """The EMA generator never runs in training mode, so nothing else corrects its averaged u, v."""
    from medsynth.train.loop import TrainSettings, train

    settings = TrainSettings(steps=6, batch_size=2, eval_every=3, sample_every=3, checkpoint_every=3,
                             val_max_slices=4, device="cpu", ema_decay=0.9)
    train(settings, 3, toy_set, toy_set, tmp_path, spec=SPEC)
    for row in read_tsv(tmp_path / "checkpoints.tsv"):
        errors = sigma_errors(load_checkpoint(tmp_path / row["checkpoint"])["ema"])
        assert errors and max(errors.values()) < 0.01, (row["step"], errors)
    select_checkpoint(tmp_path, "ssim", tmp_path / "s.json", tmp_path / "generator.pt")
    errors = sigma_errors(load_checkpoint(tmp_path / "generator.pt")["ema"])
    assert errors and max(errors.values()) < 0.01, errors
