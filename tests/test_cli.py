import json

import nibabel as nib
import torch

from medsynth.cli import main
from medsynth.io.tables import read_tsv
from medsynth.train.checkpoint import save_checkpoint


def test_phantom_command_writes_a_cohort(tmp_path, capsys):
    assert main(["phantom", str(tmp_path), "--cases", "3", "--shape", "48", "48", "8",
                 "--spacing", "8", "8", "8"]) == 0
    rows = read_tsv(tmp_path / "cases.tsv")
    assert [r["case_id"] for r in rows] == ["phantom_000", "phantom_001", "phantom_002"]
    assert nib.load(tmp_path / rows[0]["image"]).shape == (48, 48, 8)
    assert "cases.tsv" in capsys.readouterr().out


def test_info_describes_a_checkpoint_and_errors_name_the_file(tmp_path, capsys):
    save_checkpoint(tmp_path / "g.pt", {"step": 42, "ema": {"w": torch.zeros(1)}, "version": "1.2", "num_classes": 4})
    assert main(["info", str(tmp_path / "g.pt")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["step"] == 42 and out["num_classes"] == 4 and "ema" in out["contents"]
    assert main(["info", str(tmp_path / "missing.pt")]) == 2
    assert "missing.pt" in capsys.readouterr().err
