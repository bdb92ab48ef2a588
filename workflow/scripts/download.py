"""Snakemake script: make a dataset available with a cases.tsv (phantom or local folder)."""

from pathlib import Path

from medsynth.data.cohort import register_local
from medsynth.data.phantom import write_cohort
from medsynth.logs import log_to

with log_to(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    src = snakemake.params.source  # noqa: F821
    out = Path(snakemake.output.cases)  # noqa: F821
    if src["source"] == "phantom":
        p = src["phantom"]
        written = write_cohort(out.parent, p["n_cases"], p["seed"], tuple(p["shape"]), tuple(p["spacing"]))
        assert written == out, f"phantom cohort wrote {written}, expected {out}"
    elif src["source"] == "local":
        register_local(Path(src["local"]["cases_table"]), out, src["modality"])
    else:
        raise ValueError(f"dataset source {src['source']!r} is not supported yet; use 'phantom' or 'local'")
