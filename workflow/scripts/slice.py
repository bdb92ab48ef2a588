"""Snakemake script: axial slices of one preprocessed case."""

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from medsynth.data.slicing import SliceSettings, slice_case, write_pngs
from medsynth.io.nifti import load_volume
from medsynth.io.logs import log_to

with log_to(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    sm = snakemake  # noqa: F821
    s = sm.params.settings
    with ThreadPoolExecutor(3) as pool:  # gzip decompression releases the GIL
        image, label, mask = pool.map(lambda a: load_volume(*a).array,
                                      [(sm.input.image, np.float32), (sm.input.label, np.uint8),
                                       (sm.input.mask, np.uint8)])
    settings = SliceSettings(size=s["size"], min_body_fraction=s["min_body_fraction"],
                             require=tuple(s.get("require_classes", ())))
    slices = slice_case(image, label, mask, settings)
    slices.save(Path(sm.output.slices))
    Path(sm.output.png).mkdir(parents=True, exist_ok=True)
    # For people and the OASIS folder view only (training reads slices.npz): slice.pngs none spares a
    # cluster file system two files per slice. Not a param: changing it reruns nothing.
    if sm.config["slice"]["pngs"] == "all":
        write_pngs(sm.wildcards.case, slices, Path(sm.output.png), workers=sm.threads)
    logging.getLogger("medsynth").info("%s: kept %d slices (z = %s)", sm.wildcards.case, len(slices.z), slices.z.tolist())
