"""What an ``.npz`` holds, read from its headers: planning reads it (``mem_mb`` from the number of
slices) without numpy's arrays or torch."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np


def npz_shape(path: Path, key: str) -> tuple[int, ...]:
    """Shape of one array in an .npz (stored or deflated), read from its header without loading it."""
    with zipfile.ZipFile(path) as zf, zf.open(f"{key}.npy") as fh:
        major, _ = np.lib.format.read_magic(fh)
        read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, _, _ = read_header(fh)
    return tuple(shape)


def slices_in(files) -> int | None:
    """The number of slices (``images`` rows) of ``slices.npz`` files; None when one does not exist yet
    (or is a placeholder: None, Snakemake's ``<TBD>``) or cannot be read: planning then asks for its default,
    and the job that reads the file names it (an unreadable file raised here stopped the whole plan)."""
    total = 0
    for path in files:
        if path is None or not Path(str(path)).is_file():
            return None
        try:
            total += npz_shape(Path(path), "images")[0]
        except (zipfile.BadZipFile, KeyError, ValueError, OSError):
            return None
    return total
