"""What stays fixed while a run trains: its settings, architecture, data, identities, device and folders."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from medsynth.data.labels import LabelTable
from medsynth.models import get_preset
from medsynth.models.losses import MIN_TEXTURE_PIXELS, class_targets
from medsynth.models.registry import ModelSpec, check_size
from medsynth.train import distributed as ddp
from medsynth.data.slice_set import SliceSet, evenly_spaced, evenly_spaced_rows
from medsynth.models.devices import resolve_device, uses_channels_last
from medsynth.train.init_from import file_digest
from medsynth.train.settings import LEGACY_NOT_IDENTITY, TrainSettings, fingerprint
from medsynth.train.step import LOSS_NAMES, LossWeights
from medsynth.train.validation import evaluate, validation_identity

log = logging.getLogger(__name__)

SAMPLE_SLICES = 8  # validation slices shown in each sample grid


@dataclass(frozen=True)
class RunContext:
    settings: TrainSettings
    spec: ModelSpec
    num_classes: int
    run_dir: Path
    device: torch.device
    rank: int
    world_size: int
    train_data: SliceSet  # the label maps (and, paired, the images) batches are drawn from
    real_train: SliceSet  # the "real" images: train_data paired, dataset B's slices unpaired
    val: SliceSet  # the validation label maps (at most val_max_slices)
    val_rows: np.ndarray  # the rows of the whole validation set ``val`` holds (the real statistics' rows)
    reference: SliceSet  # real images the intensity distribution is compared with
    fixed: SliceSet  # the slices of every sample grid
    fingerprint: str  # a checkpoint with another one is not resumed
    validation: dict  # the validation identity (validation.validation_identity)
    config: dict
    class_names: tuple[str, ...] = ()  # the label table's, body class included (empty: not given)
    init_digest: str = ""  # train.init_from's file digest, part of the fingerprint
    perceptual: dict | None = None
    real_stats: Path | None = None
    class_targets: torch.Tensor | None = None  # unpaired: dataset B's (mean, std) per class, (2, C) on the device
    # The fingerprint as medsynth computed it before the validation slices left it: resumed too.
    legacy_fingerprint: str = ""

    @property
    def main(self) -> bool:
        """Rank 0 alone logs, validates and writes files."""
        return self.rank == 0

    @property
    def unpaired(self) -> bool:
        return self.settings.mode == "unpaired"

    @property
    def slice_size(self) -> int:
        return int(self.train_data.images.shape[-1])

    @property
    def bf16(self) -> bool:
        return self.settings.precision == "bf16" and self.device.type == "cuda"

    @property
    def weights(self) -> LossWeights:
        return self.settings.weights()

    @property
    def loss_columns(self) -> list[str]:
        return ["step", *LOSS_NAMES[self.settings.mode], "seconds"]

    @property
    def ckpt_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    @property
    def live_dir(self) -> Path:
        return self.run_dir / "live"

    @property
    def pin(self) -> bool:
        """Pinned host memory lets batches travel to a GPU while it computes."""
        return self.device.type == "cuda"

    @property
    def memory_format(self) -> torch.memory_format:
        return (torch.channels_last if uses_channels_last(self.device, self.settings.channels_last)
                else torch.contiguous_format)

    def validate(self, generator: torch.nn.Module) -> dict[str, float]:
        s = self.settings
        return evaluate(generator, self.val, self.reference, self.num_classes, s.mode, s.seed, s.batch_size * 4,
                        self.device, s.mask_threshold, self.perceptual, self.real_stats, self.val_rows)


def check_inputs(settings: TrainSettings, spec: ModelSpec, num_classes: int, train_data: SliceSet,
                 images_train: SliceSet | None, images_val: SliceSet | None) -> None:
    """Refuse what cannot train, before any network is built."""
    unpaired = settings.mode == "unpaired"
    if unpaired and (images_train is None or images_val is None):
        raise ValueError("unpaired mode needs images_train and images_val (dataset B's slices)")
    real_train = images_train if unpaired else train_data
    size = train_data.images.shape[-1]
    check_size(spec, size, f"preset {settings.model!r}")
    if unpaired and settings.lambda_class_stats > 0 and int(real_train.labels.max()) >= num_classes:
        raise ValueError(f"train.lambda_class_stats needs dataset B labelled with the label maps' table: its slices "
                         f"hold class {int(real_train.labels.max())}, the table has {num_classes} classes")
    if real_train.images.shape[-1] != size:
        raise ValueError(f"dataset B's slices are {real_train.images.shape[-1]} px, the label maps {size} px; "
                         "slice both datasets at the same slice.size")


def build_context(settings: TrainSettings, num_classes: int, train_data: SliceSet, val_data: SliceSet,
                  run_dir: Path, spec: ModelSpec | None = None, config: dict | None = None,
                  images_train: SliceSet | None = None, images_val: SliceSet | None = None,
                  perceptual: dict | None = None, real_stats: Path | None = None) -> RunContext:
    """Join the process group (several processes), check the inputs and derive the run's identities."""
    rank, world_size, device = ddp.setup(resolve_device(settings.device))
    spec = replace(spec or get_preset(settings.model), context_slices=settings.context_slices)
    if train_data.context_slices != settings.context_slices:  # sets loaded without it (tests, the CLI)
        train_data = train_data.with_context(settings.context_slices)
    if val_data.context_slices != settings.context_slices:
        val_data = val_data.with_context(settings.context_slices)
    check_inputs(settings, spec, num_classes, train_data, images_train, images_val)
    if settings.precision == "bf16" and device.type != "cuda":
        log.warning("train.precision bf16 applies on CUDA only; training in fp32 on %s", device)
    unpaired = settings.mode == "unpaired"
    val = evenly_spaced(val_data, settings.val_max_slices)
    init_digest = _init_digest(settings.init_from)
    fingerprints = run_fingerprints(settings, spec, num_classes, train_data, val, images_train if unpaired else None,
                                    init_digest)
    reference = evenly_spaced(images_val, settings.val_max_slices) if unpaired else val
    return RunContext(
        settings=settings, spec=spec, num_classes=num_classes, run_dir=Path(run_dir), device=device, rank=rank,
        world_size=world_size, train_data=train_data, real_train=images_train if unpaired else train_data,
        val=val, val_rows=evenly_spaced_rows(len(val_data), settings.val_max_slices).numpy(),
        reference=reference, fixed=evenly_spaced(val, SAMPLE_SLICES), fingerprint=fingerprints[0],
        legacy_fingerprint=fingerprints[1],
        validation=validation_identity(real_stats, perceptual, settings.mask_threshold,
                                       val.fingerprint() + (reference.fingerprint() if unpaired else "")),
        config=config or {},
        class_names=(names := _class_names(config, num_classes)), init_digest=init_digest,
        perceptual=perceptual, real_stats=real_stats,
        class_targets=_dataset_b_targets(settings, images_train, names or tuple(map(str, range(num_classes))), device),
    )


def run_fingerprints(settings: TrainSettings, spec: ModelSpec, num_classes: int, train_data: SliceSet,
                     val: SliceSet, images_train: SliceSet | None, init_digest: str) -> tuple[str, str]:
    """(the run's fingerprint, the one medsynth gave it before the validation slices left it): what it
    learns from, not which slices validation generates from (the validation identity holds those)."""
    init = f"init:{init_digest}" if init_digest else ""
    images = images_train.fingerprint() if images_train is not None else ""
    learnt = train_data.fingerprint()  # a hash over every training slice's case and z: once
    return (fingerprint(settings, spec, num_classes, learnt + images + init),
            fingerprint(settings, spec, num_classes, learnt + val.fingerprint() + images + init, LEGACY_NOT_IDENTITY))


def _class_names(config: dict | None, num_classes: int) -> tuple[str, ...]:
    entries = (config or {}).get("labels")
    if not entries:
        return ()
    names = LabelTable.from_config(entries).names
    if len(names) != num_classes:
        raise ValueError(f"the label table has {len(names)} classes ({list(names)}), the run {num_classes}")
    return names


def _init_digest(init_from: str) -> str:
    if not init_from:
        return ""
    if not Path(init_from).is_file():
        raise FileNotFoundError(f"{init_from}: train.init_from names no file; give an exported generator.pt, a "
                                "run's latest.pt or an EMA snapshot")
    return file_digest(init_from)


def _dataset_b_targets(settings: TrainSettings, images_train: SliceSet | None, names: tuple[str, ...],
                       device: torch.device) -> torch.Tensor | None:
    """Unpaired with ``lambda_class_stats``: dataset B's mean and within-slice std per class (``names``: the
    table's classes), computed once."""
    if settings.mode != "unpaired" or settings.lambda_class_stats <= 0:
        return None
    targets = class_targets(images_train.images, images_train.labels, len(names))
    log.info("class-statistics targets from dataset B: means %s, stds %s",
             *([round(v, 3) for v in row] for row in targets.tolist()))
    for gap in class_target_gaps(targets, names):
        log.info(gap)
    return targets.to(device)


def class_target_gaps(targets: torch.Tensor, names: tuple[str, ...]) -> list[str]:
    """Why a class-statistics target is NaN (the loss skips it): dataset B never shows the class, or never
    shows enough of it in one slice for its texture (std) to say anything."""
    absent = [n for n, m in zip(names, targets[0].tolist()) if not math.isfinite(m)]
    thin = [n for n, m, s in zip(names, *targets.tolist()) if math.isfinite(m) and not math.isfinite(s)]
    lines = []
    if absent:
        lines.append(f"class-statistics targets: dataset B's training slices show no pixel of {', '.join(absent)}; "
                     "the loss has no target for them")
    if thin:
        verb, their = ("covers", "its") if len(thin) == 1 else ("cover", "their")
        lines.append(f"class-statistics targets: {', '.join(thin)} never {verb} {MIN_TEXTURE_PIXELS} pixels of one of "
                     f"dataset B's training slices, so {their} std (texture) target is NA and only {their} mean is matched")
    return lines
