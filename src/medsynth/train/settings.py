"""A training's settings (``experiments.<name>.train``) and the run identity derived from them."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

from medsynth.models.registry import ModelSpec
from medsynth.train.keys import HOW_KEYS, MODE_ONLY, MODES  # noqa: F401 (MODES: callers import it from here)
from medsynth.train.step import LossWeights

# Settings that change how a run is carried out or observed, not what it learns: changing them resumes.
# mask_threshold only decides what body Dice counts as tissue, val_max_slices which slices validation
# generates from: both part of the validation identity instead (a change recomputes the history from the
# snapshots). init_from enters the identity by its file's digest, not its path (context.build_context).
NOT_IDENTITY = ("steps", *HOW_KEYS, "mask_threshold", "init_from", "val_max_slices")
# The identity of runs started before val_max_slices and the validation slices left it: such a run still
# resumes (context.build_context's legacy_fingerprint), so an upgrade restarts no training.
LEGACY_NOT_IDENTITY = ("steps", *HOW_KEYS, "mask_threshold", "init_from")


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
    lambda_class_stats: float = 0.0
    lambda_diversity: float = 0.0
    diversity_margin: float = 0.1
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
    context_slices: int = 0  # 2.5D: G also sees the label maps of this many slices below and above
    init_from: str = ""  # fine-tuning: a medsynth checkpoint the new run's networks start from (train.init_from)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainSettings":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise KeyError(f"unknown training settings {unknown}; known: {sorted(known)}")
        settings = cls(**values)
        if settings.mode not in MODES:
            raise ValueError(f"train.mode {settings.mode!r} is unknown; use one of {MODES}")
        if settings.lambda_diversity > 0 and settings.batch_size % 2:
            raise ValueError(f"train.lambda_diversity needs an even train.batch_size (each label map is drawn twice), "
                             f"got {settings.batch_size}")
        from medsynth.data.slice_context import context_offsets

        context_offsets(settings.context_slices)  # refuses an out-of-range value, naming the key
        if settings.precision not in ("fp32", "bf16"):
            raise ValueError(f"train.precision {settings.precision!r} is unknown; use 'fp32' or 'bf16'")
        return settings

    def weights(self) -> LossWeights:
        return LossWeights(labelmix=self.lambda_labelmix, mask=self.lambda_mask, class_stats=self.lambda_class_stats,
                           diversity=self.lambda_diversity, diversity_margin=self.diversity_margin,
                           seg=self.lambda_seg, adv=self.lambda_adv, r1_gamma=self.r1_gamma, r1_every=self.r1_every)


def fingerprint(settings: TrainSettings, spec: ModelSpec, num_classes: int, data: str,
                not_identity: tuple[str, ...] = NOT_IDENTITY) -> str:
    """Identity of a run: changes to it start training afresh; changing only ``steps`` extends it.

    Another mode's loss weights count at their defaults: the run never uses them, and the workflow
    does not rerun it for them (``train.keys.MODE_ONLY``, which the train rule's params use too); a run whose config leaves them at
    their defaults keeps the fingerprint it had before this rule.
    """
    ident = dataclasses.asdict(settings)
    for key in not_identity:
        ident.pop(key)
    defaults = TrainSettings()
    for mode, keys in MODE_ONLY.items():
        if mode != settings.mode:
            ident.update({k: getattr(defaults, k) for k in keys})
    blob = json.dumps({"settings": ident, "model": spec.to_dict(), "classes": num_classes, "data": data}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
