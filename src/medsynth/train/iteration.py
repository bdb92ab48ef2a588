"""One iteration of the loop: draw a batch, take a training step, bring its losses to the host and check them."""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from medsynth.train.context import RunContext
from medsynth.train.state import RunState
from medsynth.train.step import Nets, paired_step, unpaired_step


class NonFiniteLoss(RuntimeError):
    pass


class NonFiniteWeights(NonFiniteLoss):
    """A network holds NaN or inf after a step whose losses were finite (a non-finite gradient)."""


def draw_batch(ctx: RunContext, state: RunState) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(real images, labels, body masks, neighbouring label maps) on the device; unpaired, the real images
    come from dataset B."""
    bs = ctx.settings.batch_size
    if ctx.settings.lambda_diversity > 0:  # mode seeking: each label map twice, the halves in the same order
        idx = torch.randint(len(ctx.train_data), (bs // 2,), generator=state.data_rng).repeat(2)
    else:
        idx = torch.randint(len(ctx.train_data), (bs,), generator=state.data_rng)
    real, labels, body = ctx.train_data.batch(idx, ctx.device, ctx.pin, ctx.memory_format)
    context = ctx.train_data.context_batch(idx, ctx.device, ctx.pin)
    if ctx.unpaired:
        jdx = torch.randint(len(ctx.real_train), (bs,), generator=state.data_rng)
        real = ctx.real_train.batch(jdx, ctx.device, ctx.pin, ctx.memory_format)[0]
    return real, labels, body, context


def losses_to_floats(losses: dict[str, torch.Tensor]) -> dict[str, float]:
    """The step's losses as Python floats, in one device-to-host transfer.

    Each ``.item()`` would wait for the device on its own. Stacking promotes to
    the widest dtype among them, which holds every value exactly, so the floats
    equal those ``.item()`` gives.
    """
    values = torch.stack(list(losses.values())).tolist()
    return dict(zip(losses, values))


def check_finite(row: dict, step: int, last_good: Path) -> None:
    bad = [k for k, v in row.items() if k.startswith("loss") and not math.isfinite(v)]
    if bad:
        raise NonFiniteLoss(
            f"step {step}: {', '.join(f'{k}={row[k]}' for k in bad)}; training stopped. "
            f"The last good checkpoint is {last_good} (lower the learning rates or check the data)."
        )


def check_weights(nets: Nets, step: int, last_good: Path) -> None:
    """Refuse to sample, validate or save networks holding NaN or inf: written, they would replace the
    last good ``latest.pt`` (every resume failing again) and leave a broken EMA snapshot."""
    modules = {"G": nets.G, "D": nets.D, "the EMA generator": nets.ema.model, "Du": nets.Du}
    tensors = {name: [t for t in m.state_dict().values() if t.is_floating_point()]
               for name, m in modules.items() if m is not None}
    finite = torch.stack([torch.stack([torch.isfinite(t).all() for t in ts]).all() for ts in tensors.values()])
    bad = [name for name, ok in zip(tensors, finite.tolist()) if not ok]
    if bad:
        raise NonFiniteWeights(
            f"step {step}: non-finite weights in {', '.join(bad)} (the step's losses were finite); training "
            f"stopped before writing a snapshot or checkpoint of them. The last good checkpoint is {last_good} "
            "(lower the learning rates or check the data)."
        )


def iterate(ctx: RunContext, state: RunState, last_good: Path) -> dict:
    """One training step; advances ``state.step`` and returns its row of ``losses.tsv``.

    ``last_good`` is the checkpoint a non-finite loss (NonFiniteLoss) refers the user to.
    """
    t0 = time.perf_counter()
    real, labels, body, context = draw_batch(ctx, state)
    if ctx.unpaired:
        losses = unpaired_step(state.nets, real, labels, body, ctx.num_classes, ctx.weights, state.step + 1, ctx.bf16,
                               ctx.class_targets, context)
    else:
        losses = paired_step(state.nets, real, labels, body, ctx.num_classes, ctx.weights, state.mix_rng, ctx.bf16,
                             context)
    state.step += 1
    # Timed after the transfer, which waits for the step to finish on the device.
    row = {"step": state.step, **losses_to_floats(losses), "seconds": round(time.perf_counter() - t0, 4)}
    check_finite(row, state.step, last_good)
    return row
