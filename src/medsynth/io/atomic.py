"""Files that appear whole or not at all: written under a temporary name beside the target, then renamed.

A job killed mid-write (SLURM's time limit, an out-of-memory kill) leaves the previous file, or none,
never half of one that the next stage or a retry would read; a failed write removes its temporary file.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator


@contextmanager
def replacing(path: str | Path, part_name: str | None = None,
              keep_previous: str | Path | None = None) -> Iterator[Path]:
    """The temporary path to write (``part_name``, default the name + ``.part``; writers that read the
    format from the ending need theirs kept), renamed onto ``path`` when the block completes.

    With ``keep_previous``, the file being replaced is first renamed to that name, only after the new
    one is complete, so a crash between the renames leaves the previous one under the kept name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(part_name or path.name + ".part")
    try:
        yield tmp
        if keep_previous is not None and path.exists():
            path.replace(keep_previous)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_open(path: str | Path, mode: str = "w", keep_previous: str | Path | None = None,
                newline: str | None = None) -> Iterator[IO]:
    """``replacing`` with the file open and synced to disk before the rename: a record that later
    jobs decide by (tables between stages, checkpoints, resume records) survives a crash of the node."""
    with replacing(path, keep_previous=keep_previous) as tmp:
        with tmp.open(mode, newline=newline) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
