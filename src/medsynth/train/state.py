"""What changes as a run trains, and what its checkpoint ``latest.pt`` holds to resume it exactly."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field

import torch

import medsynth
from medsynth.models.registry import ModelSpec
from medsynth.train.context import RunContext
from medsynth.train.settings import TrainSettings
from medsynth.train.step import Nets, build_nets


@dataclass
class RunState:
    nets: Nets
    data_rng: torch.Generator  # which slices each batch holds
    mix_rng: torch.Generator  # LabelMix masks (paired mode)
    step: int = 0  # steps done
    history: list[dict] = field(default_factory=list)  # one row of validation metrics per validation step
    best: dict = field(default_factory=dict)  # per metric: its best value and step (validation.best_of)

    def rng_states(self, device: torch.device) -> dict:
        rng = {"torch": torch.get_rng_state(), "data": self.data_rng.get_state(), "mix": self.mix_rng.get_state()}
        if device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(device)
        return rng

    def restore(self, saved: dict, world_size: int, device: torch.device) -> None:
        """Continue from checkpoint ``saved`` (its fingerprint checked by the caller)."""
        self.nets.load(saved)
        torch.set_rng_state(saved["rng"]["torch"])
        # The batch streams belong to one process count: with another one, each rank's
        # stream starts again from its seed.
        if world_size == saved.get("world_size", 1):
            self.data_rng.set_state(saved["rng"]["data"])
            self.mix_rng.set_state(saved["rng"]["mix"])
        if device.type == "cuda" and "cuda" in saved["rng"]:
            torch.cuda.set_rng_state(saved["rng"]["cuda"], device)
        self.step, self.history, self.best = saved["step"], saved["history"], saved["best"]


def new_state(settings: TrainSettings, spec: ModelSpec, num_classes: int, device: torch.device,
              rank: int) -> RunState:
    """Networks as initialised from ``settings.seed`` and the batch streams of process ``rank``."""
    torch.manual_seed(settings.seed)  # same initial weights on every rank
    nets = build_nets(spec, num_classes, settings.mode, settings.lr_g, settings.lr_d,
                      (settings.beta1, settings.beta2), settings.ema_decay, device)
    # Each rank draws its own batches; rank 0 reproduces a single-process run.
    data_rng = torch.Generator().manual_seed(settings.seed + 1000 * rank)
    mix_rng = torch.Generator().manual_seed(settings.seed + 1 + 1000 * rank)
    return RunState(nets, data_rng, mix_rng)


def checkpoint_payload(ctx: RunContext, state: RunState) -> dict:
    """Everything ``latest.pt`` holds: the state, and what it was trained with (checked when resuming)."""
    return {
        "step": state.step, **state.nets.state(), "rng": state.rng_states(ctx.device), "world_size": ctx.world_size,
        "history": state.history, "best": state.best, "validation": ctx.validation, "fingerprint": ctx.fingerprint,
        "settings": dataclasses.asdict(ctx.settings),
        "model": ctx.spec.to_dict(), "num_classes": ctx.num_classes, "classes": list(ctx.class_names),
        "slice_size": ctx.slice_size, "init_from": _init_record(ctx), "config": ctx.config,
        "version": medsynth.__version__,
    }


def _init_record(ctx: RunContext) -> dict:
    return {"path": ctx.settings.init_from, "digest": ctx.init_digest} if ctx.settings.init_from else {}


def state_digest(module: torch.nn.Module) -> str:
    """Digest of a module's parameters and buffers: equal digests, bit-identical weights."""
    h = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
