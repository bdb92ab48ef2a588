"""Snakemake script: the table of a batch of cases (case id, slices), once every one is sliced."""

from pathlib import Path

import numpy as np

from medsynth.io.tables import write_tsv
from medsynth.io.logs import log_to

with log_to(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    sm = snakemake  # noqa: F821
    rows = []
    for path in sm.input.slices:
        with np.load(path) as data:  # only the z array is read
            rows.append({"case_id": Path(path).parent.name, "slices": len(data["z"])})
    write_tsv(sm.output[0], rows, ["case_id", "slices"])
