"""The OASIS training loop: resumable, signal-safe, rank-0 style logging to TSV files.

Layout of a run folder (``run_dir``)::

    checkpoints/latest.pt           full state, rewritten every checkpoint_every steps
    checkpoints/latest.prev.pt      the one before it, resumed from when latest.pt cannot be read
    checkpoints/ema_step_XXXXXX.pt  EMA generator at each validation step (what selection picks from)
    checkpoints/nonfinite.json      the last non-finite loss and how often it recurred from one checkpoint
    live/losses.tsv, live/metrics.tsv  appended while training
    samples/step_XXXXXX.png         label | generated (EMA) | real on fixed validation slices
    losses.tsv, metrics.tsv, checkpoints.tsv   written once training has finished

Only the last three are declared Snakemake outputs: Snakemake deletes the
declared outputs of a failed job, and the checkpoints must survive that.

The pieces: ``settings`` (TrainSettings, the run's fingerprint), ``context``
(what stays fixed), ``state`` (what changes, and the checkpoint of it),
``resume``, ``iteration`` (one step), ``hooks`` (what runs after a step, on its
schedule), ``signals``, ``records`` (the run folder's tables), ``failures``
(a non-finite loss that recurs from one checkpoint is refused, not replayed again).
"""

from __future__ import annotations

import logging
from pathlib import Path

from tqdm import tqdm

from medsynth.models.registry import ModelSpec
from medsynth.train import distributed as ddp
from medsynth.train.context import RunContext, build_context
from medsynth.data.slice_set import SliceSet
from medsynth.models.devices import describe_hardware
from medsynth.train.devices import prepare_nets
from medsynth.train.failures import RepeatedNonFinite, note_failure, refuse_repeated
from medsynth.train.hooks import after_step
from medsynth.train.init_from import initialise
from medsynth.train.iteration import NonFiniteLoss, NonFiniteWeights, iterate
from medsynth.train.records import (JOB_COLUMNS, METRIC_COLUMNS, finalize, loss_line, open_losses, record_job_event,
                                    start_live_tables)
from medsynth.train.resume import LatestCheckpoint, resume
from medsynth.train.settings import MODES, TrainSettings, fingerprint
from medsynth.train.signals import INTERRUPTED_EXIT, StopFlag
from medsynth.train.state import RunState, new_state, state_digest
from medsynth.train.validation import evaluate

log = logging.getLogger(__name__)

# The loop's public names, wherever they are defined (workflow scripts, bench and tests import them from here).
__all__ = ["INTERRUPTED_EXIT", "JOB_COLUMNS", "METRIC_COLUMNS", "MODES", "NonFiniteLoss", "NonFiniteWeights",
           "RepeatedNonFinite", "TrainSettings",
           "evaluate", "finalize", "fingerprint", "record_job_event", "state_digest", "train"]


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
    inputs_id: str = "",
) -> dict:
    """Train (or resume) an OASIS GAN; returns a summary of the finished run.

    ``perceptual`` (the metrics settings) and ``real_stats`` (Inception
    statistics of the real validation images) add FID and KID to validation
    when the pretrained weights are available.

    ``train_data``/``val_data`` give the label maps (and, in paired mode, the
    images). In unpaired mode ``images_train``/``images_val`` hold dataset B's
    slices: their images are the "real" side, their labels are never used.

    ``inputs_id`` (``run.inputs_digest``) goes into the record of a non-finite loss, so that a later job can
    refuse to replay it before reading its data (``failures``).
    """
    ctx = build_context(settings, num_classes, train_data, val_data, run_dir, spec, config, images_train,
                        images_val, perceptual, real_stats)
    refuse_repeated(ctx.ckpt_dir, fingerprint=ctx.fingerprint)  # before the networks are built
    state = new_state(settings, ctx.spec, num_classes, ctx.device, ctx.rank)
    latest = LatestCheckpoint(ctx.ckpt_dir)
    if not resume(ctx, state, latest) and settings.init_from:
        initialise(state.nets, settings, Path(settings.init_from), ctx.spec, ctx.slice_size, ctx.class_names,
                   ctx.config.get("labels"))
    prepare_nets(state.nets, ctx.device, settings.channels_last, settings.compile, ctx.world_size)
    if ctx.main and state.step > settings.steps:
        # Kept as it is (selection may pick any validated step): say so rather than publish it unremarked.
        log.warning("train.steps is %d but the run in %s is at step %d: nothing to train; its history and snapshots "
                    "up to step %d are published and selected from", settings.steps, ctx.run_dir, state.step,
                    state.step)
    if ctx.main:
        start_live_tables(ctx.live_dir, state.step, state.history, ctx.loss_columns)
        record_job_event(ctx.run_dir, "resumed" if state.step else "started", state.step, ctx.world_size,
                         describe_hardware(ctx.device, ctx.world_size))
    try:
        run_steps(ctx, state, latest)
    except NonFiniteLoss as exc:
        if ctx.main:
            note_failure(ctx.ckpt_dir, ctx.fingerprint, inputs_id, latest.step, state.step, str(exc))
        raise
    ddp.barrier()
    if ctx.main:
        record_job_event(ctx.run_dir, "finished", state.step, ctx.world_size)
    summary = finalize(ctx.run_dir, state.history) if ctx.main else {"steps": state.step, "history": state.history}
    # Equal on every rank of a multi-GPU run: a cheap check that the replicas never drifted apart.
    summary["weights_digest"] = {"G": state_digest(state.nets.G), "ema": state_digest(state.nets.ema.model)}
    return summary


def run_steps(ctx: RunContext, state: RunState, latest: LatestCheckpoint) -> None:
    """Iterate from ``state.step`` to ``settings.steps``, each step followed by the hooks due after it."""
    losses_fh = open_losses(ctx.live_dir / "losses.tsv", ctx.loss_columns) if ctx.main else None
    try:
        with StopFlag() as stop, tqdm(total=ctx.settings.steps, initial=state.step, desc="train", unit="it",
                                      mininterval=5.0, disable=not ctx.main) as bar:
            while state.step < ctx.settings.steps:
                row = iterate(ctx, state, latest.path)
                if losses_fh is not None:
                    losses_fh.write(loss_line(row, ctx.loss_columns))
                bar.update(1)
                bar.set_postfix(g=f"{row['loss_g']:.3f}")
                after_step(ctx, state, latest, losses_fh, stop)
    finally:
        if losses_fh is not None:
            losses_fh.close()
