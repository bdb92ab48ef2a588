"""Snakemake script: sample grid label | K samples | real on test slices; one case across its
slices; coronal and sagittal views of the test cases' volumes."""

import json
from pathlib import Path

import numpy as np

from medsynth.data.labels import LabelTable
from medsynth.data.slicing import CaseSlices
from medsynth.inference.generate_cases import generated_cases
from medsynth.io.logs import log_to
from medsynth.reporting.plots import case_strip, test_sample_grid
from medsynth.reporting.side_views import case_views, side_views_figure

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
    views = []
    metas = {Path(m).parent.name: json.loads(Path(m).read_text()) for m in sm.input.meta}
    for case_id, real_path, gen_path in sorted(cases)[:3]:
        real = CaseSlices.load(real_path)
        with np.load(gen_path) as f:
            fake = f["samples"][0].astype(np.float32)
        spacing = metas[case_id]["spacing"]  # of the preprocessed grid the slices were cut from
        views.append((case_id, case_views(real.labels, real.masks, real.z, [("sample 1", fake),
                                                                             (real_name, real.images)]),
                      float(spacing[2]) / float(spacing[0])))
    side_views_figure(Path(sm.output.side), views, num_classes, dpi=s["dpi"])
