"""The OASIS training loop: resumable, signal-safe, rank-0 style logging to TSV files.

Layout of a run folder (``run_dir``)::

    checkpoints/latest.pt           full state, rewritten every checkpoint_every steps
    checkpoints/ema_step_XXXXXX.pt  EMA generator at each validation step (what selection picks from)
    live/losses.tsv, live/metrics.tsv  appended while training
    samples/step_XXXXXX.png         label | generated (EMA) | real on fixed validation slices
    losses.tsv, metrics.tsv, checkpoints.tsv   written once training has finished

Only the last three are declared Snakemake outputs: Snakemake deletes the
declared outputs of a failed job, and the checkpoints must survive that.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

import medsynth
from medsynth.generate import synthesize
from medsynth.io.tables import read_tsv, write_tsv
from medsynth.metrics import DIRECTIONS, is_better
from medsynth.metrics.image import paired_metrics
from medsynth.models import build_discriminator, build_generator, get_preset
from medsynth.models.ema import EMA
from medsynth.models.losses import labelmix_loss, labelmix_mask, seg_ce_fake, seg_ce_real
from medsynth.models.registry import ModelSpec, check_size
from medsynth.train.checkpoint import load_checkpoint, save_checkpoint
from medsynth.train.data import SliceSet, one_hot

log = logging.getLogger(__name__)

LOSS_COLUMNS = ["step", "loss_g", "loss_d_real", "loss_d_fake", "loss_d_labelmix", "seconds"]
METRIC_COLUMNS = ["step", *DIRECTIONS]
INTERRUPTED_EXIT = 75  # EX_TEMPFAIL: the job should be retried, and will resume


class NonFiniteLoss(RuntimeError):
    pass


@dataclass(frozen=True)
class TrainSettings:
    mode: str = "paired"
    model: str = "tiny"
    steps: int = 400
    batch_size: int = 4
    lr_g: float = 1e-4
    lr_d: float = 4e-4
    beta1: float = 0.0
    beta2: float = 0.999
    lambda_labelmix: float = 10.0
    ema_decay: float = 0.999
    eval_every: int = 100
    sample_every: int = 100
    checkpoint_every: int = 100
    val_max_slices: int = 64
    seed: int = 0
    device: str = "auto"

    @classmethod
    def from_dict(cls, values: dict) -> "TrainSettings":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise KeyError(f"unknown training settings {unknown}; known: {sorted(known)}")
        settings = cls(**values)
        if settings.mode != "paired":
            raise ValueError(f"train.mode {settings.mode!r} is not supported yet; use 'paired'")
        return settings


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"train.device is {name!r} but CUDA is not available on this machine")
    return torch.device(name)


def fingerprint(settings: TrainSettings, spec: ModelSpec, num_classes: int, data: str) -> str:
    """Identity of a run: changes to it start training afresh; changing only ``steps`` extends it."""
    ident = dataclasses.asdict(settings)
    for key in ("steps", "device", "eval_every", "sample_every", "checkpoint_every"):
        ident.pop(key)
    blob = json.dumps({"settings": ident, "model": spec.to_dict(), "classes": num_classes, "data": data}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class _StopFlag:
    """SIGTERM/SIGUSR1 (SLURM's warning before the time limit) -> checkpoint and exit."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._old: dict[int, object] = {}

    def __enter__(self) -> "_StopFlag":
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. inside a test runner thread)
                pass
        return self

    def _handle(self, signum, frame) -> None:
        self.signal = signum

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def evaluate(generator: torch.nn.Module, val: SliceSet, num_classes: int, seed: int, batch: int,
             device: torch.device) -> dict[str, float]:
    fake = synthesize(generator, val.labels, num_classes, seed, batch, device)
    return {k: float(v.mean()) for k, v in paired_metrics(fake, val.images).items()}


def _subset(data: SliceSet, limit: int) -> SliceSet:
    if len(data) <= limit:
        return data
    idx = torch.linspace(0, len(data) - 1, limit).round().long()
    return SliceSet(
        data.images[idx], data.labels[idx], data.masks[idx],
        [data.case_ids[i] for i in idx], [data.z[i] for i in idx],
    )


def train_step(
    G: torch.nn.Module,
    D: torch.nn.Module,
    ema: EMA,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
    real: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    lambda_labelmix: float,
    mix_rng: torch.Generator,
) -> dict[str, torch.Tensor]:
    """One OASIS iteration (paired): G step, EMA update, D step with LabelMix. Returns detached losses."""
    onehot = one_hot(labels, num_classes)
    # Generator: D must segment the fake into the input labels. One forward of G
    # per iteration: its output is reused (detached) for the D step.
    D.requires_grad_(False)
    fake = G(onehot)
    loss_g = seg_ce_real(D(fake), onehot)
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    D.requires_grad_(True)
    ema.update(G)

    fake = fake.detach()
    logits_fake = D(fake)
    logits_real = D(real)
    loss_fake = seg_ce_fake(logits_fake)
    loss_real = seg_ce_real(logits_real, onehot)
    mask = labelmix_mask(labels.cpu(), mix_rng).to(real.device)
    loss_lm = lambda_labelmix * labelmix_loss(D, real, fake, mask, logits_real, logits_fake)
    opt_d.zero_grad(set_to_none=True)
    (loss_fake + loss_real + loss_lm).backward()
    opt_d.step()
    return {"loss_g": loss_g.detach(), "loss_d_real": loss_real.detach(), "loss_d_fake": loss_fake.detach(),
            "loss_d_labelmix": loss_lm.detach()}


def train(
    settings: TrainSettings,
    num_classes: int,
    train_data: SliceSet,
    val_data: SliceSet,
    run_dir: Path,
    spec: ModelSpec | None = None,
    config: dict | None = None,
) -> dict:
    """Train (or resume) an OASIS GAN; returns a summary of the finished run."""
    from medsynth.plots import sample_grid  # matplotlib only when training runs

    run_dir = Path(run_dir)
    device = resolve_device(settings.device)
    spec = spec or get_preset(settings.model)
    size = train_data.images.shape[-1]
    check_size(spec, size, f"preset {settings.model!r}")
    torch.manual_seed(settings.seed)

    G = build_generator(spec, num_classes).to(device)
    D = build_discriminator(spec, num_classes).to(device)
    ema = EMA(G, settings.ema_decay)
    betas = (settings.beta1, settings.beta2)
    opt_g = torch.optim.Adam(G.parameters(), lr=settings.lr_g, betas=betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=settings.lr_d, betas=betas)
    data_rng = torch.Generator().manual_seed(settings.seed)
    mix_rng = torch.Generator().manual_seed(settings.seed + 1)
    val = _subset(val_data, settings.val_max_slices)
    ident = fingerprint(settings, spec, num_classes, train_data.fingerprint() + val.fingerprint())

    ckpt_dir, live_dir = run_dir / "checkpoints", run_dir / "live"
    latest = ckpt_dir / "latest.pt"
    step, history, best = 0, [], {}
    if latest.exists():
        # CPU first: RNG states must stay CPU tensors; load_state_dict moves weights to the device.
        state = load_checkpoint(latest, map_location="cpu")
        if state.get("fingerprint") == ident:
            G.load_state_dict(state["G"])
            D.load_state_dict(state["D"])
            ema.load_state_dict(state["ema"])
            opt_g.load_state_dict(state["opt_g"])
            opt_d.load_state_dict(state["opt_d"])
            torch.set_rng_state(state["rng"]["torch"])
            data_rng.set_state(state["rng"]["data"])
            mix_rng.set_state(state["rng"]["mix"])
            if device.type == "cuda" and "cuda" in state["rng"]:
                torch.cuda.set_rng_state(state["rng"]["cuda"], device)
            step, history, best = state["step"], state["history"], state["best"]
            log.info("resuming %s from step %d", run_dir, step)
        else:
            stale = run_dir / f"stale-{time.strftime('%Y%m%d-%H%M%S')}"
            log.warning("%s was trained with other settings or data; moved to %s, starting afresh", latest, stale)
            stale.mkdir(parents=True)
            for sub in ("checkpoints", "live", "samples"):
                if (run_dir / sub).exists():
                    shutil.move(str(run_dir / sub), str(stale / sub))
    _truncate_losses(live_dir / "losses.tsv", step)
    write_tsv(live_dir / "metrics.tsv", history, METRIC_COLUMNS)

    def payload() -> dict:
        rng = {"torch": torch.get_rng_state(), "data": data_rng.get_state(), "mix": mix_rng.get_state()}
        if device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(device)
        return {
            "step": step, "G": G.state_dict(), "D": D.state_dict(), "ema": ema.state_dict(),
            "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(), "rng": rng,
            "history": history, "best": best, "fingerprint": ident, "settings": dataclasses.asdict(settings),
            "model": spec.to_dict(), "num_classes": num_classes, "config": config or {},
            "version": medsynth.__version__,
        }

    fixed = _subset(val, 8)
    losses_fh = _open_losses(live_dir / "losses.tsv")
    G.train()
    D.train()
    try:
        with _StopFlag() as stop, tqdm(total=settings.steps, initial=step, desc="train", unit="it",
                                       mininterval=5.0) as bar:
            while step < settings.steps:
                t0 = time.perf_counter()
                idx = torch.randint(len(train_data), (settings.batch_size,), generator=data_rng)
                losses = train_step(G, D, ema, opt_g, opt_d, train_data.images[idx].to(device, non_blocking=True),
                                    train_data.labels[idx].to(device, non_blocking=True), num_classes,
                                    settings.lambda_labelmix, mix_rng)
                step += 1

                row = {"step": step, **{k: v.item() for k, v in losses.items()},
                       "seconds": round(time.perf_counter() - t0, 4)}
                bad = [k for k, v in row.items() if k.startswith("loss") and not math.isfinite(v)]
                if bad:
                    raise NonFiniteLoss(
                        f"step {step}: {', '.join(f'{k}={row[k]}' for k in bad)}; training stopped. "
                        f"The last good checkpoint is {latest} (lower the learning rates or check the data)."
                    )
                losses_fh.write("\t".join(str(row[c]) for c in LOSS_COLUMNS) + "\n")
                bar.update(1)
                bar.set_postfix(g=f"{row['loss_g']:.3f}", d=f"{row['loss_d_real'] + row['loss_d_fake']:.3f}")

                last = step == settings.steps
                if step % settings.sample_every == 0 or last:
                    fake_s = synthesize(ema.model, fixed.labels, num_classes, settings.seed, settings.batch_size, device)
                    sample_grid(run_dir / "samples" / f"step_{step:06d}.png", fixed.labels, [fake_s], fixed.images,
                                num_classes, title=f"step {step} (EMA generator)")
                if step % settings.eval_every == 0 or last:
                    metrics = evaluate(ema.model, val, num_classes, settings.seed, settings.batch_size * 4, device)
                    history.append({"step": step, **metrics})
                    for name, value in metrics.items():
                        if is_better(name, value, best.get(name, {}).get("value")):
                            best[name] = {"value": value, "step": step}
                    write_tsv(live_dir / "metrics.tsv", history, METRIC_COLUMNS)
                    save_checkpoint(ckpt_dir / f"ema_step_{step:06d}.pt", {
                        "step": step, "ema": ema.state_dict(), "model": spec.to_dict(),
                        "num_classes": num_classes, "metrics": metrics, "version": medsynth.__version__,
                    })
                    log.info("step %d validation: %s", step, metrics)
                if step % settings.checkpoint_every == 0 or last or stop.signal is not None:
                    losses_fh.flush()
                    save_checkpoint(latest, payload())
                if stop.signal is not None:
                    log.warning("signal %d received: checkpoint written at step %d, exiting to be resumed",
                                stop.signal, step)
                    raise SystemExit(INTERRUPTED_EXIT)
    finally:
        losses_fh.close()

    return finalize(run_dir, history)


def _open_losses(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists() or path.stat().st_size == 0
    fh = path.open("a", buffering=1)
    if new:
        fh.write("\t".join(LOSS_COLUMNS) + "\n")
    return fh


def _truncate_losses(path: Path, step: int) -> None:
    """Drop loss rows logged after the checkpoint we resume from: those steps run again."""
    if not path.exists():
        return
    rows = [r for r in read_tsv(path) if r.get("step", "").isdigit() and int(r["step"]) <= step]
    write_tsv(path, rows, LOSS_COLUMNS)


def finalize(run_dir: Path, history: list[dict]) -> dict:
    """Publish the declared outputs once training is complete."""
    live = run_dir / "live"
    shutil.copyfile(live / "losses.tsv", run_dir / "losses.tsv.part")
    (run_dir / "losses.tsv.part").replace(run_dir / "losses.tsv")
    write_tsv(run_dir / "metrics.tsv", history, METRIC_COLUMNS)
    rows = [{"step": h["step"], "checkpoint": f"checkpoints/ema_step_{h['step']:06d}.pt"} for h in history]
    write_tsv(run_dir / "checkpoints.tsv", rows, ["step", "checkpoint"])
    return {"steps": history[-1]["step"] if history else 0, "history": history}
