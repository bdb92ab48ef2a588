"""Finished cases of a generation that was stopped, kept for the next run.

A generation job for a real cohort runs for hours (AutoPET: ~900 label maps x 4 samples). Snakemake
deletes a job's declared outputs before it runs it again, so a job stopped at its time limit would
lose every case it had written. The workflow therefore writes the cases into a work folder beside
its output, each case closed by a record of what made it (``done.json``: a key over the generator
file, the settings, the case's input files and the code, and its manifest rows); the next run with the same
key takes a closed case as it is, and at the end the work folder becomes the output folder.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

from medsynth.io.atomic import atomic_open
from medsynth.io.stamps import code_digest, digest_of, file_stamps

RECORD = "done.json"
HOW_FAST = ("device", "batch")  # GenerateSettings fields that change no file (batch: float rounding at most)


def case_key(generator: Path, settings: Any, case: Sequence, inputs: Sequence[Path]) -> str:
    """What decides a case's files: the generator file, the settings but the device and batch size (how fast,
    not what: a retry on a GPU with less memory keeps the closed cases), the case's fields (id, inputs, part,
    patient), the sizes and times of its ``inputs`` files, and the code."""
    fields = {k: v for k, v in dataclasses.asdict(settings).items() if k not in HOW_FAST}
    return digest_of({"settings": fields, "case": [str(v) for v in case], "files": file_stamps([generator, *inputs]),
                      "code": code_digest()})


def finished_rows(case_dir: Path, key: str) -> list[dict] | None:
    """The manifest rows of a case closed with ``key``; None when it is not (then its folder is removed:
    what is there is half written or of other settings)."""
    record = case_dir / RECORD
    try:
        data = json.loads(record.read_text())
        if data.get("key") == key:
            return data["rows"]
    except (OSError, ValueError, KeyError):
        pass
    shutil.rmtree(case_dir, ignore_errors=True)
    return None


def close_case(case_dir: Path, key: str, rows: list[dict]) -> None:
    """Mark a case complete: its record is written last, atomically."""
    with atomic_open(case_dir / RECORD) as fh:
        fh.write(json.dumps({"key": key, "rows": rows}))


def publish(work_dir: Path, out_dir: Path, case_ids: Sequence[str], rows: list[dict]) -> list[dict]:
    """Move the work folder to ``out_dir`` (records and cases of other runs left out) and point the rows'
    paths there."""
    keep = set(case_ids)
    for child in work_dir.iterdir():
        if child.name not in keep:
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    for case_id in keep:
        (work_dir / case_id / RECORD).unlink(missing_ok=True)
    if out_dir.exists():
        out_dir.rmdir()  # Snakemake removed its output before the job; anything in it is not ours to delete
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    os.replace(work_dir, out_dir)
    old, new = str(work_dir) + os.sep, str(out_dir) + os.sep
    return [{k: new + v[len(old):] if isinstance(v, str) and v.startswith(old) else v for k, v in r.items()}
            for r in rows]


class Straight:
    """Cases written straight into the output folder, nothing kept between runs (``medsynth generate``,
    the benches): the interface of ``Resumable`` with nothing to resume."""

    def __init__(self, out_dir: Path):
        self.folder = Path(out_dir)

    def finished(self, case: Sequence, inputs: Sequence[Path]) -> list[dict] | None:
        return None

    def close(self, case_id: str, rows: list[dict]) -> None:
        pass

    def publish(self, case_ids: Sequence[str], rows: list[dict]) -> list[dict]:
        return rows


class Resumable(Straight):
    """Cases written into ``work_dir``, each closed with its key (``case_key``) once complete; the work
    folder becomes ``out_dir`` at the end (``publish``). A case closed by an earlier run with the same key
    is taken as it is."""

    def __init__(self, out_dir: Path, work_dir: Path, generator: Path, settings: Any):
        super().__init__(work_dir)
        self.out_dir, self.generator, self.settings = Path(out_dir), Path(generator), settings
        self.keys: dict[str, str] = {}

    def finished(self, case: Sequence, inputs: Sequence[Path]) -> list[dict] | None:
        case_id = case[0]
        self.keys[case_id] = case_key(self.generator, self.settings, case, inputs)
        return finished_rows(self.folder / case_id, self.keys[case_id])

    def close(self, case_id: str, rows: list[dict]) -> None:
        close_case(self.folder / case_id, self.keys[case_id], rows)

    def publish(self, case_ids: Sequence[str], rows: list[dict]) -> list[dict]:
        return publish(self.folder, self.out_dir, case_ids, rows)


def require_generated(*paths: str | Path) -> None:
    """Stop with what to do when a file generate wrote is gone: Snakemake does not notice a file deleted
    inside an output folder, and a bare FileNotFoundError says neither who wrote it nor how to get it back."""
    gone = [Path(p) for p in paths if not Path(p).exists()]
    if gone:
        raise FileNotFoundError(f"{gone[0]}: missing from generate's output (deleted or moved after it ran); run "
                                "generation again: your snakemake command with --forcerun generate")
