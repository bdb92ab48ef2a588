"""Snakemake script: axial slices of one preprocessed case."""

import logging
from pathlib import Path

import numpy as np

from medsynth.data.slicing import SliceSettings, slice_case, write_pngs
from medsynth.io.nifti import load_volume
from medsynth.logs import log_to

with log_to(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    sm = snakemake  # noqa: F821
    s = sm.params.settings
    slices = slice_case(
        load_volume(sm.input.image, np.float32).array,
        load_volume(sm.input.label, np.uint8).array,
        load_volume(sm.input.mask, np.uint8).array,
        SliceSettings(size=s["size"], min_body_fraction=s["min_body_fraction"]),
    )
    slices.save(Path(sm.output.slices))
    Path(sm.output.png).mkdir(parents=True, exist_ok=True)
    write_pngs(sm.wildcards.case, slices, Path(sm.output.png))
    logging.getLogger("medsynth").info("%s: kept %d slices (z = %s)", sm.wildcards.case, len(slices.z), slices.z.tolist())
