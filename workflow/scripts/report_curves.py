"""Snakemake script: validation-metric and loss curves."""

import json

from medsynth.io.logs import log_to
from medsynth.reporting.plots import loss_curves, metric_curves

with log_to(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    sm = snakemake  # noqa: F821
    s = sm.params.settings
    step = json.loads(open(sm.input.selected).read())["step"]
    metric_curves(sm.input.metrics, sm.output.metrics, selected_step=step, dpi=s["dpi"])
    loss_curves(sm.input.losses, sm.output.losses, window=s["loss_smoothing"], dpi=s["dpi"])
