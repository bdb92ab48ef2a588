"""Snakemake script: make a dataset available with a cases.tsv (phantom, local folder or archive URL)."""

import uuid
from pathlib import Path
from urllib.parse import urlparse

from medsynth.data.cohort import drop_labels, register_layout, register_local, use_image_column
from medsynth.data.archives import extract
from medsynth.data.download import fetch
from medsynth.data.phantom import write_cohort
from medsynth.io.logs import log_to

with log_to(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    src = snakemake.params.source  # noqa: F821
    out = Path(snakemake.output.cases)  # noqa: F821
    dataset = out.parent.name
    layout = src.get("layout", {})
    label_root = Path(layout["label_root"]) if layout.get("label_root") else None
    if src["source"] == "phantom":
        p = src["phantom"]
        written = write_cohort(out.parent, p["n_cases"], p["seed"], tuple(p["shape"]), tuple(p["spacing"]))
        assert written == out, f"phantom cohort wrote {written}, expected {out}"
        if src["modality"] == "MR":  # the phantom writes a matching MR-like volume per case
            use_image_column(out, "mr", "MR")
        if src.get("image_only"):
            drop_labels(out)
    elif src["source"] == "local" and "cases_table" in src["local"]:
        register_local(Path(src["local"]["cases_table"]), out, src["modality"],
                       labelled=not src.get("image_only"))
    elif src["source"] == "local":
        if not layout:
            raise ValueError(f"config: datasets.{dataset}.layout is required with local.root")
        register_layout(Path(src["local"]["root"]), layout, out, src["modality"], label_root)
    else:
        url = src["url"]
        if not layout:
            raise ValueError(f"config: datasets.{dataset}.layout is required with source url")
        name = url.get("filename") or Path(urlparse(url["href"]).path).name
        archive = fetch(url["href"], Path("resources/archives") / dataset / name,
                        sha256=url.get("sha256"), md5=url.get("md5"), size=url.get("size"))
        root = extract(archive, out.parent / "files")
        register_layout(root, layout, out, src["modality"], label_root)
    Path(snakemake.output.ran).write_text(uuid.uuid4().hex + "\n")  # noqa: F821 (new: the split reruns)
