"""A non-finite loss that recurs from one checkpoint: recorded, replayed once, then refused.

Resuming is bit-exact (the same batches, the same random draws), so a NaN that
stopped a training at step N stops each retry at step N again, after up to
``checkpoint_every`` steps of GPU time, on every retry the profile allows. A
NaN on a GPU may yet be transient (a nondeterministic kernel, a faulty device),
so one replay is allowed.

``checkpoints/nonfinite.json`` notes each failure with the resume point it came
from (size, modification time and inode of ``latest.pt`` and ``latest.prev.pt``:
``LatestCheckpoint.load`` picks between them by their content alone) and how
often it happened from there. A start from that very point after ``1 + REPLAYS``
failures is refused: by ``run.run_experiment`` before the slices are read when
its inputs are those of the last failure, else by ``loop.train`` once the run's
fingerprint is known, before the networks are built. The record lives in
``checkpoints/``, so a run moved to ``stale-*`` takes it along; a checkpoint
written past the failed step deletes it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from medsynth.io.jsonfile import read_json, write_json
from medsynth.train.resume import LATEST, PREVIOUS

log = logging.getLogger(__name__)

RECORD = "nonfinite.json"
REPLAYS = 1  # replays of a failure from one resume point before it counts as deterministic


class RepeatedNonFinite(RuntimeError):
    """The same non-finite loss stopped training ``1 + REPLAYS`` times from the checkpoint a start would resume."""


def resume_point(ckpt_dir: Path) -> dict:
    """The files a start would resume from, each as [size, mtime_ns, inode] (None when absent).

    Checkpoints of one run are all about one size; the inode tells a rewrite (a new file, renamed into place)
    from the file it replaced even where the file system keeps modification times to the second.
    """
    point = {}
    for name in (LATEST, PREVIOUS):
        try:
            st = (Path(ckpt_dir) / name).stat()
            point[name] = [st.st_size, st.st_mtime_ns, st.st_ino]
        except FileNotFoundError:
            point[name] = None
    return point


def read_record(ckpt_dir: Path) -> dict | None:
    path = Path(ckpt_dir) / RECORD
    if not path.is_file():
        return None
    try:
        record = read_json(path)
    except (OSError, ValueError) as exc:
        # Never a reason to stop training: without it a deterministic NaN costs one more replay.
        log.warning("%s; ignored (it is rewritten at the next non-finite loss)", exc)
        return None
    return record if isinstance(record, dict) else None


def note_failure(ckpt_dir: Path, fingerprint: str, inputs: str, checkpoint_step: int | None, failed_step: int,
                 message: str) -> dict:
    """Record a non-finite loss at ``failed_step``; counted on when the last record is the same failure (same run,
    same step, same resume point), else counted afresh."""
    point = resume_point(ckpt_dir)
    old = read_record(ckpt_dir) or {}
    same = (old.get("fingerprint"), old.get("failed_step"), old.get("resume_point")) == (
        fingerprint, failed_step, point)
    record = {"fingerprint": fingerprint, "inputs": inputs, "resume_point": point,
              "checkpoint_step": checkpoint_step, "failed_step": failed_step, "message": message,
              "count": int(old.get("count", 0)) + 1 if same else 1, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    write_json(Path(ckpt_dir) / RECORD, record)
    if record["count"] <= REPLAYS:
        log.error("non-finite loss recorded in %s: a retry replays it from the same checkpoint (it may be "
                  "transient), and is refused should it recur there", Path(ckpt_dir) / RECORD)
    else:
        log.error("the same non-finite loss %d times from the same checkpoint (%s): the next start is refused",
                  record["count"], Path(ckpt_dir) / RECORD)
    return record


def refuse_repeated(ckpt_dir: Path, fingerprint: str | None = None, inputs: str | None = None) -> None:
    """Raise RepeatedNonFinite when the record says this start would replay a failure seen ``1 + REPLAYS`` times.

    ``fingerprint`` (the run identity, known once the data are loaded) decides; ``inputs`` (a digest of what the
    fingerprint is derived from, known before) lets a job refuse before reading its data: a record of other
    inputs may still be this run's, and is left to the fingerprint.
    """
    record = read_record(ckpt_dir)
    if record is None or int(record.get("count", 0)) < 1 + REPLAYS:
        return
    if fingerprint is not None and record.get("fingerprint") != fingerprint:
        return  # another run's: its checkpoints are moved aside (resume.move_stale) or never resumed
    if inputs is not None and (not inputs or record.get("inputs") != inputs):
        return
    if record.get("resume_point") != resume_point(ckpt_dir):
        return  # a newer checkpoint (or one restored): not the start that failed
    path = Path(ckpt_dir) / RECORD
    start = (f"the checkpoint of step {record['checkpoint_step']}" if record.get("checkpoint_step") is not None
             else "the start of training (no checkpoint)")
    raise RepeatedNonFinite(
        f"{path}: training stopped {record['count']} times at step {record.get('failed_step')} with a non-finite "
        f"loss or weights, each time resuming from {start}; resuming is exact, so a retry would stop there again. "
        f"Last: {record.get('message')} Lower the learning rates (train.lr_g, train.lr_d) or check the data; "
        f"to try it again as it is, delete {path} (counted afresh: a start and one replay before the next refusal)."
    )


def clear_passed(ckpt_dir: Path, step: int) -> None:
    """A checkpoint written at ``step``, past the recorded failure: the failure did not recur, forget it."""
    record = read_record(ckpt_dir)
    if record is not None and step > int(record.get("failed_step", step)):
        (Path(ckpt_dir) / RECORD).unlink(missing_ok=True)
        log.info("step %d passed the non-finite loss recorded at step %d; %s deleted", step,
                 record["failed_step"], Path(ckpt_dir) / RECORD)
