"""The OASIS training loop: resumable, signal-safe, rank-0 style logging to TSV files.

Layout of a run folder (``run_dir``)::

    checkpoints/latest.pt           full state, rewritten every checkpoint_every steps
    checkpoints/latest.prev.pt      the one before it, resumed from when latest.pt cannot be read
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
import os
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
from medsynth.metrics import DIRECTIONS
from medsynth.metrics.image import body_dice, intensity_w1, paired_metrics
from medsynth.metrics.perceptual import perceptual_scores
from medsynth.models import get_preset
from medsynth.models.registry import ModelSpec, check_size
from medsynth.train import distributed as ddp
from medsynth.train.data import SliceSet
from medsynth.train.resume import LatestCheckpoint, move_stale
from medsynth.train.step import LOSS_NAMES, LossWeights, Nets, build_nets, paired_step, unpaired_step
from medsynth.train.validation import best_of, revalidate, save_snapshot, validation_identity

log = logging.getLogger(__name__)

METRIC_COLUMNS = ["step", *DIRECTIONS]
INTERRUPTED_EXIT = 75  # EX_TEMPFAIL: the job should be retried, and will resume
MODES = ("paired", "unpaired")


class NonFiniteLoss(RuntimeError):
    pass


@dataclass(frozen=True)
class TrainSettings:
    mode: str = "paired"  # paired | unpaired
    model: str = "tiny"
    steps: int = 400
    batch_size: int = 4
    lr_g: float = 1e-4
    lr_d: float = 4e-4
    beta1: float = 0.0
    beta2: float = 0.999
    lambda_labelmix: float = 10.0
    lambda_mask: float = 1.0
    lambda_class_mean: float = 0.0
    lambda_seg: float = 1.0
    lambda_adv: float = 1.0
    r1_gamma: float = 1.0
    r1_every: int = 16
    mask_threshold: float = -0.95
    ema_decay: float = 0.999
    eval_every: int = 100
    sample_every: int = 100
    checkpoint_every: int = 100
    val_max_slices: int = 64
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"  # fp32 | bf16 (CUDA only: autocast)
    channels_last: bool = True  # CUDA only
    compile: bool = False  # torch.compile the generator and discriminators (CUDA)
    ram_cache_gb: float = 32.0  # slices beyond this are memory-mapped from the run folder

    @classmethod
    def from_dict(cls, values: dict) -> "TrainSettings":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise KeyError(f"unknown training settings {unknown}; known: {sorted(known)}")
        settings = cls(**values)
        if settings.mode not in MODES:
            raise ValueError(f"train.mode {settings.mode!r} is unknown; use one of {MODES}")
        if settings.precision not in ("fp32", "bf16"):
            raise ValueError(f"train.precision {settings.precision!r} is unknown; use 'fp32' or 'bf16'")
        return settings

    def weights(self) -> LossWeights:
        return LossWeights(labelmix=self.lambda_labelmix, mask=self.lambda_mask, class_mean=self.lambda_class_mean, seg=self.lambda_seg,
                           adv=self.lambda_adv, r1_gamma=self.r1_gamma, r1_every=self.r1_every)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"train.device is {name!r} but CUDA is not available on this machine")
    return torch.device(name)


def fingerprint(settings: TrainSettings, spec: ModelSpec, num_classes: int, data: str) -> str:
    """Identity of a run: changes to it start training afresh; changing only ``steps`` extends it."""
    ident = dataclasses.asdict(settings)
    # mask_threshold only decides what body Dice counts as tissue: part of the validation identity.
    for key in ("steps", "device", "eval_every", "sample_every", "checkpoint_every", "ram_cache_gb", "compile",
                "mask_threshold"):
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


def evaluate(generator: torch.nn.Module, val: SliceSet, reference: SliceSet, num_classes: int, mode: str,
             seed: int, batch: int, device: torch.device, threshold: float,
             perceptual: dict | None = None, real_stats: Path | None = None) -> dict[str, float]:
    """Validation metrics of the EMA generator on the val label maps.

    SSIM/PSNR/RMSE need a pixel-aligned real image (paired mode); body Dice and
    the intensity W1 distance need none (``reference`` = real images to compare
    intensity distributions with: the same slices in paired mode, dataset B's
    validation slices in unpaired mode).
    """
    fake = synthesize(generator, val.labels.long(), num_classes, seed, batch, device)
    out = {k: math.nan for k in DIRECTIONS}
    if mode == "paired":
        out.update({k: float(v.mean()) for k, v in paired_metrics(fake, val.images.float()).items()})
    out["body_dice"] = float(body_dice(fake, val.masks.float(), threshold).mean())
    out["intensity_w1"] = intensity_w1(fake, val.masks.float(), reference.images.float(), reference.masks.float())
    if perceptual is not None and real_stats is not None:
        scores = perceptual_scores(fake, real_stats, perceptual, device)
        out["fid"], out["kid"] = scores["fid"], scores["kid"]
    return out


def _subset(data: SliceSet, limit: int) -> SliceSet:
    if len(data) <= limit:
        return data
    idx = torch.linspace(0, len(data) - 1, limit).round().long()
    return SliceSet(
        data.images[idx], data.labels[idx], data.masks[idx],
        [data.case_ids[i] for i in idx], [data.z[i] for i in idx],
    )


def _prepare(nets: Nets, settings: TrainSettings, device: torch.device, rank_count: int) -> None:
    """Device placement, channels_last, torch.compile and DDP wrapping of the forward callables."""
    if device.type == "cuda" and settings.channels_last:
        for net in (nets.G, nets.D, nets.Du, nets.ema.model):
            if net is not None:
                net.to(memory_format=torch.channels_last)
    for net in (nets.G, nets.D, nets.Du):
        if net is not None:
            ddp.broadcast_module(net)
    if settings.compile:
        nets.g_call = torch.compile(nets.G)
        nets.d_call = torch.compile(nets.D)
        if nets.Du is not None:
            nets.du_call = torch.compile(nets.Du)
    if rank_count > 1:
        # G has one forward and one backward per step: the DDP wrapper fits it (the
        # discriminators average their gradients by hand, see step.allreduce_grads).
        import inspect

        from torch.nn.parallel import DistributedDataParallel

        # No buffer sync in forward (instance norm has no running statistics); the keyword
        # was renamed in torch 2.14, and older versions know only the old one.
        sync = ("forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
                else "broadcast_buffers")
        nets.g_call = DistributedDataParallel(nets.g_call if settings.compile else nets.G,
                                              device_ids=[device.index] if device.type == "cuda" else None,
                                              **{sync: False})


def train(
    settings: TrainSettings,
    num_classes: int,
    train_data: SliceSet,
    val_data: SliceSet,
    run_dir: Path,
    spec: ModelSpec | None = None,
    config: dict | None = None,
    images_train: SliceSet | None = None,
    images_val: SliceSet | None = None,
    perceptual: dict | None = None,
    real_stats: Path | None = None,
) -> dict:
    """Train (or resume) an OASIS GAN; returns a summary of the finished run.

    ``perceptual`` (the metrics settings) and ``real_stats`` (Inception
    statistics of the real validation images) add FID and KID to validation
    when the pretrained weights are available.

    ``train_data``/``val_data`` give the label maps (and, in paired mode, the
    images). In unpaired mode ``images_train``/``images_val`` hold dataset B's
    slices: their images are the "real" side, their labels are never used.
    """
    from medsynth.plots import sample_grid  # matplotlib only when training runs

    run_dir = Path(run_dir)
    rank, world_size, device = ddp.setup(resolve_device(settings.device))
    unpaired = settings.mode == "unpaired"
    if unpaired and (images_train is None or images_val is None):
        raise ValueError("unpaired mode needs images_train and images_val (dataset B's slices)")
    real_train = images_train if unpaired else train_data
    spec = spec or get_preset(settings.model)
    size = train_data.images.shape[-1]
    check_size(spec, size, f"preset {settings.model!r}")
    if real_train.images.shape[-1] != size:
        raise ValueError(f"dataset B's slices are {real_train.images.shape[-1]} px, the label maps {size} px; "
                         "slice both datasets at the same slice.size")
    bf16 = settings.precision == "bf16" and device.type == "cuda"
    if settings.precision == "bf16" and not bf16:
        log.warning("train.precision bf16 applies on CUDA only; training in fp32 on %s", device)
    torch.manual_seed(settings.seed)  # same initial weights on every rank

    nets = build_nets(spec, num_classes, settings.mode, settings.lr_g, settings.lr_d,
                      (settings.beta1, settings.beta2), settings.ema_decay, device)
    weights = settings.weights()
    # Each rank draws its own batches; rank 0 reproduces a single-process run.
    data_rng = torch.Generator().manual_seed(settings.seed + 1000 * rank)
    mix_rng = torch.Generator().manual_seed(settings.seed + 1 + 1000 * rank)
    val = _subset(val_data, settings.val_max_slices)
    reference = _subset(images_val, settings.val_max_slices) if unpaired else val
    data_id = train_data.fingerprint() + val.fingerprint() + (images_train.fingerprint() if unpaired else "")
    ident = fingerprint(settings, spec, num_classes, data_id)
    loss_columns = ["step", *LOSS_NAMES[settings.mode], "seconds"]
    main = rank == 0

    ckpt_dir, live_dir = run_dir / "checkpoints", run_dir / "live"
    latest = LatestCheckpoint(ckpt_dir)
    vid = validation_identity(real_stats, perceptual, settings.mask_threshold)

    def validate(generator: torch.nn.Module) -> dict[str, float]:
        return evaluate(generator, val, reference, num_classes, settings.mode, settings.seed,
                        settings.batch_size * 4, device, settings.mask_threshold, perceptual, real_stats)

    step, history, best = 0, [], {}
    state = latest.load()
    ddp.barrier()  # every rank has read the files before rank 0 may move or rewrite them
    if state is not None:
        if state.get("fingerprint") == ident:
            nets.load(state)
            torch.set_rng_state(state["rng"]["torch"])
            if world_size == state.get("world_size", 1):
                data_rng.set_state(state["rng"]["data"])
                mix_rng.set_state(state["rng"]["mix"])
            if device.type == "cuda" and "cuda" in state["rng"]:
                torch.cuda.set_rng_state(state["rng"]["cuda"], device)
            step, history, best = state["step"], state["history"], state["best"]
            log.info("resuming %s from step %d", run_dir, step)
            fresh = revalidate(state, vid, ckpt_dir, nets.ema.model, validate) if main else None
            if fresh is not None:
                history, best = fresh["history"], fresh["best"]
                latest.save(fresh)  # a finished run writes no checkpoint of its own
        elif main:
            move_stale(run_dir, latest.path)
    ddp.barrier()
    _prepare(nets, settings, device, world_size)
    if main:
        _truncate_losses(live_dir / "losses.tsv", step, loss_columns)
        write_tsv(live_dir / "metrics.tsv", history, METRIC_COLUMNS)
        record_job_event(run_dir, "resumed" if step else "started", step, world_size)

    def payload() -> dict:
        rng = {"torch": torch.get_rng_state(), "data": data_rng.get_state(), "mix": mix_rng.get_state()}
        if device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(device)
        return {
            "step": step, **nets.state(), "rng": rng, "world_size": world_size,
            "history": history, "best": best, "validation": vid, "fingerprint": ident,
            "settings": dataclasses.asdict(settings),
            "model": spec.to_dict(), "num_classes": num_classes, "config": config or {},
            "version": medsynth.__version__,
        }

    fixed = _subset(val, 8)
    losses_fh = _open_losses(live_dir / "losses.tsv", loss_columns) if main else None
    memory = torch.channels_last if device.type == "cuda" and settings.channels_last else torch.contiguous_format
    pin = device.type == "cuda"
    try:
        with _StopFlag() as stop, tqdm(total=settings.steps, initial=step, desc="train", unit="it",
                                       mininterval=5.0, disable=not main) as bar:
            while step < settings.steps:
                t0 = time.perf_counter()
                idx = torch.randint(len(train_data), (settings.batch_size,), generator=data_rng)
                real, labels, body = train_data.batch(idx, device, pin, memory)
                if unpaired:
                    jdx = torch.randint(len(images_train), (settings.batch_size,), generator=data_rng)
                    real = images_train.batch(jdx, device, pin, memory)[0]
                if unpaired:
                    losses = unpaired_step(nets, real, labels, body, num_classes, weights, step + 1, bf16)
                else:
                    losses = paired_step(nets, real, labels, body, num_classes, weights, mix_rng, bf16)
                step += 1

                row = {"step": step, **{k: v.item() for k, v in losses.items()},
                       "seconds": round(time.perf_counter() - t0, 4)}
                bad = [k for k, v in row.items() if k.startswith("loss") and not math.isfinite(v)]
                if bad:
                    raise NonFiniteLoss(
                        f"step {step}: {', '.join(f'{k}={row[k]}' for k in bad)}; training stopped. "
                        f"The last good checkpoint is {latest.path} (lower the learning rates or check the data)."
                    )
                if main:
                    losses_fh.write("\t".join(str(row[c]) for c in loss_columns) + "\n")
                bar.update(1)
                bar.set_postfix(g=f"{row['loss_g']:.3f}")

                last = step == settings.steps
                sampling = step % settings.sample_every == 0 or last
                validating = step % settings.eval_every == 0 or last
                if sampling or validating:
                    nets.ema.refresh()  # on every rank, so the replicas' EMA stays identical
                if main and sampling:
                    fake_s = synthesize(nets.ema.model, fixed.labels.long(), num_classes, settings.seed,
                                        settings.batch_size, device)
                    sample_grid(run_dir / "samples" / f"step_{step:06d}.png", fixed.labels, [fake_s],
                                fixed.images.float() if not unpaired else None, num_classes,
                                title=f"step {step} (EMA generator)")
                if main and validating:
                    metrics = validate(nets.ema.model)
                    history.append({"step": step, **metrics})
                    best = best_of(history)
                    write_tsv(live_dir / "metrics.tsv", history, METRIC_COLUMNS)
                    save_snapshot(ckpt_dir, step, nets.ema.state_dict(), spec.to_dict(), num_classes, metrics, vid)
                    log.info("step %d validation: %s", step, metrics)
                stopping = ddp.any_rank(stop.signal is not None, device)
                if main and (step % settings.checkpoint_every == 0 or last or stopping):
                    losses_fh.flush()
                    latest.save(payload())
                if stopping:
                    ddp.barrier()
                    if main:
                        received = signal.Signals(stop.signal).name if stop.signal else "another process"
                        record_job_event(run_dir, "stopped", step, world_size, f"{received}; checkpoint written")
                    log.warning("stop signal received: checkpoint written at step %d, exiting to be resumed", step)
                    raise SystemExit(INTERRUPTED_EXIT)
    finally:
        if losses_fh is not None:
            losses_fh.close()

    ddp.barrier()
    if main:
        record_job_event(run_dir, "finished", step, world_size)
    summary = finalize(run_dir, history) if main else {"steps": step, "history": history}
    # Equal on every rank of a multi-GPU run: a cheap check that the replicas never drifted apart.
    summary["weights_digest"] = {"G": state_digest(nets.G), "ema": state_digest(nets.ema.model)}
    return summary


JOB_COLUMNS = ["time", "event", "step", "slurm_job_id", "processes", "detail"]


def record_job_event(run_dir: Path, event: str, step: int, processes: int, detail: str = "") -> None:
    """One line in ``jobs.tsv``: when each job of a training started, stopped (and why) or finished.

    Snakemake replaces a failed job's log when it retries it; this table keeps
    the whole chain of jobs of a long training.
    """
    path = run_dir / "jobs.tsv"
    rows = read_tsv(path) if path.is_file() else []
    rows.append({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "event": event, "step": step,
                 "slurm_job_id": os.environ.get("SLURM_JOB_ID", ""), "processes": processes, "detail": detail})
    write_tsv(path, rows, JOB_COLUMNS)


def state_digest(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _open_losses(path: Path, columns: list[str]):
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists() or path.stat().st_size == 0
    fh = path.open("a", buffering=1)
    if new:
        fh.write("\t".join(columns) + "\n")
    return fh


def _truncate_losses(path: Path, step: int, columns: list[str]) -> None:
    """Drop loss rows logged after the checkpoint we resume from: those steps run again."""
    if not path.exists():
        return
    rows = [r for r in read_tsv(path) if r.get("step", "").isdigit() and int(r["step"]) <= step]
    write_tsv(path, rows, columns)


def finalize(run_dir: Path, history: list[dict]) -> dict:
    """Publish the declared outputs once training is complete."""
    live = run_dir / "live"
    shutil.copyfile(live / "losses.tsv", run_dir / "losses.tsv.part")
    (run_dir / "losses.tsv.part").replace(run_dir / "losses.tsv")
    write_tsv(run_dir / "metrics.tsv", history, METRIC_COLUMNS)
    rows = [{"step": h["step"], "checkpoint": f"checkpoints/ema_step_{h['step']:06d}.pt"} for h in history]
    write_tsv(run_dir / "checkpoints.tsv", rows, ["step", "checkpoint"])
    return {"steps": history[-1]["step"] if history else 0, "history": history}
