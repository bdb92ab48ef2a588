"""Snakemake script: download the FID Inception and LPIPS AlexNet weights once (or record why not)."""

import json
from pathlib import Path

from medsynth.io.logs import log_to
from medsynth.metrics.perceptual import fetch_weights

with log_to(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    sm = snakemake  # noqa: F821
    s = sm.params.settings
    status = fetch_weights(Path(s["weights_dir"]), s["perceptual"], s["check_hash"])
    Path(sm.output.status).write_text(json.dumps(status, indent=1))
