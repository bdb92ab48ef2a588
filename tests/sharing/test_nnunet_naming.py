"""The nnU-Net dataset and case names an export writes, and that naming them stays cheap (the config checks do it
at every Snakemake start)."""

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from medsynth.sharing.nnunet_naming import case_identifiers, default_name, export_folders


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


def test_case_identifiers_are_one_per_case_and_plain_where_nothing_collides() -> None:
    digest = lambda case: hashlib.sha256(case.encode()).hexdigest()[:8]  # noqa: E731
    assert case_identifiers(["phantom_003", "maps.P9_s1"]) == {"phantom_003": "phantom_003", "maps.P9_s1": "maps_P9_s1"}
    # Sanitised into one name, letter case ignored: each id that sanitising changed gets a digest of itself.
    assert case_identifiers(["P_01", "P.01"]) == {"P_01": "P_01", "P.01": f"P_01_{digest('P.01')}"}
    assert case_identifiers(["p.01", "P_01"]) == {"P_01": "P_01", "p.01": f"p_01_{digest('p.01')}"}
    assert case_identifiers(["a.b_c", "a_b.c"]) == {"a.b_c": f"a_b_c_{digest('a.b_c')}",
                                                    "a_b.c": f"a_b_c_{digest('a_b.c')}"}
    with pytest.raises(ValueError, match="cases 'P_01' and 'p_01' get one nnU-Net identifier"):
        case_identifiers(["P_01", "p_01"])
