"""What a result kept between runs was made from, as a key: files by size and time, medsynth's code by digest.

A long job stopped midway (a time limit; Snakemake deletes its outputs before the retry) keeps what it
finished beside its outputs, each piece with such a key; the retry takes a piece only when its key is
the one it would make (``inference.resume``: generated cases; ``evaluation.utility_resume``: the utility
curve's trainings; ``evaluation.stages``: evaluate's parts; the latter two through ``io.kept``).
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any, Iterable


@functools.cache
def code_digest() -> str:
    """medsynth's code (every module: the generator's architecture in ``models`` as much as the volume
    writing in ``data`` and ``io``): a piece closed by a run of other code (a crash, then a fix) is made again."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + path.read_bytes())
    return digest.hexdigest()


def file_stamps(paths: Iterable[str | Path]) -> list[str]:
    """Each file as its path, size and modification time: a file written again (a rerun of the job that
    makes it) has another time, and stat-ing thousands of inputs costs nothing, unlike reading them."""
    stamps = []
    for f in map(Path, paths):
        st = f.stat()  # a folder (a DICOM series): its own time
        stamps.append(f"{f}:{st.st_size}:{st.st_mtime_ns}")
    return stamps


def digest_of(value: Any) -> str:
    """sha256 of ``value`` as canonical JSON (keys sorted; what JSON lacks, e.g. a path, as its str)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()
