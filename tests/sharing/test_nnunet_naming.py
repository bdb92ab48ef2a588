"""The nnU-Net dataset names an export writes, and that naming them stays cheap (the config checks do it
at every Snakemake start)."""

import subprocess
import sys
from pathlib import Path

import pytest

from medsynth.sharing.nnunet_naming import default_name, export_folders


def test_dataset_names_and_ids() -> None:
    assert default_name("demo-unpaired") == "DemoUnpaired"
    config = {"export": {"first_id": 500}, "experiments": {"demo": {}, "demo-unpaired": {}, "ct2mr": {"export_id": 7}}}
    assert export_folders(config) == {"ct2mr": "Dataset007_Ct2mr", "demo": "Dataset501_Demo",
                                      "demo-unpaired": "Dataset502_DemoUnpaired"}
    with pytest.raises(ValueError, match="1..999"):
        export_folders({"export": {"first_id": 999}, "experiments": {"a": {}, "b": {}}})


def test_the_config_checks_import_neither_numpy_nor_nibabel_nor_tqdm_nor_torch() -> None:
    """They run at every Snakemake start, i.e. in every job of a cluster run: 0.05-0.1 s of imports each.
    The demo's config (a phantom dataset, whose test patients the checks list) is checked in full."""
    demo = Path(__file__).resolve().parents[2] / "config" / "config.yaml"
    code = ("import sys; from medsynth.config.load import load_config; "
            f"load_config({str(demo)!r}); "
            "print(sorted(m for m in ('numpy', 'nibabel', 'tqdm', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
