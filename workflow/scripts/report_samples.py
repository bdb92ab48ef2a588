"""Snakemake script: sample grid label | K samples | real on test slices."""

from pathlib import Path

import numpy as np

from medsynth.data.labels import LabelTable
from medsynth.data.slicing import CaseSlices
from medsynth.generate import generated_cases
from medsynth.logs import log_to
from medsynth.plots import case_strip, test_sample_grid

with log_to(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    sm = snakemake  # noqa: F821
    s = sm.params.settings
    cases = generated_cases(sm.input.real, Path(sm.input.cases))
    num_classes = LabelTable.from_config(sm.params.labels).num_classes  # with the body class
    # Unpaired: the label map's own image is another modality, shown for orientation only.
    real_name = "real" if sm.params.mode == "paired" else "label source image"
    test_sample_grid(cases, num_classes, Path(sm.output.grid), rows=s["grid_rows"], dpi=s["dpi"],
                     real_name=real_name)
    case_id, real_path, gen_path = sorted(cases)[0]
    real = CaseSlices.load(real_path)
    with np.load(gen_path) as f:
        fakes = f["samples"].astype(np.float32)
    case_strip(Path(sm.output.strip), case_id, real.labels, list(fakes), real.images, num_classes,
               dpi=s["dpi"], real_name=real_name)
