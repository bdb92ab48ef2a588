"""Snakemake script: sample grid label | K samples | real on test slices; one case across its
slices; coronal and sagittal views of the test cases' volumes."""

import json
from pathlib import Path

from medsynth.data.labels import LabelTable
from medsynth.inference.generate_cases import generated_cases
from medsynth.io.logs import log_to
from medsynth.reporting.sample_figures import SampleFigures, real_name, sample_figures

with log_to(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    sm = snakemake  # noqa: F821
    s = sm.params.settings
    # The spacing of the preprocessed grid each case's slices were cut from.
    spacings = {Path(m).parent.name: json.loads(Path(m).read_text())["spacing"] for m in sm.input.meta}
    sample_figures(generated_cases(sm.input.real, Path(sm.input.cases)),
                   LabelTable.from_config(sm.params.labels).num_classes,  # with the body class
                   spacings, SampleFigures(Path(sm.output.grid), Path(sm.output.strip), Path(sm.output.side)),
                   rows=s["grid_rows"], dpi=s["dpi"], real_name=real_name(sm.params.mode))
