"""The folder view OASIS-style loaders expect: <part>/images/*.png and <part>/labels/*.png."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping


def oasis_view(parts: Mapping[str, str], png_dirs: Mapping[str, Path], out_dir: Path) -> int:
    """Relative symlinks to each case's slice PNGs under the case's split part; returns the link count.

    Links, not copies: the view costs no disk and always shows the current slices.
    """
    out_dir = Path(out_dir)
    n = 0
    for case_id, png_dir in sorted(png_dirs.items()):
        if case_id not in parts:
            raise KeyError(f"case {case_id!r} has slices but no row in the split table")
        if not (Path(png_dir) / "images").is_dir():  # write_pngs makes the folder even for no slice
            raise FileNotFoundError(f"{png_dir} holds no slice PNGs: case {case_id!r} was sliced with "
                                    "slice.pngs: none. For the OASIS view set slice.pngs: all and run the slice "
                                    "jobs again (snakemake --forcerun slice; what learns from slices reruns too)")
        for kind in ("images", "labels"):
            target_dir = out_dir / parts[case_id] / kind
            target_dir.mkdir(parents=True, exist_ok=True)
            for png in sorted((Path(png_dir) / kind).glob("*.png")):
                link = target_dir / png.name
                link.symlink_to(os.path.relpath(png.resolve(), target_dir.resolve()))
                n += 1
    return n
