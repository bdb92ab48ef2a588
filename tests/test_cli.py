import json
from pathlib import Path

import nibabel as nib
import torch

from medsynth.cli import main
from medsynth.io.tables import read_tsv
from medsynth.io.checkpoint import save_checkpoint


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


def test_generate_from_a_folder_of_label_maps(tmp_path, capsys):
    import numpy as np

    from medsynth.data.phantom import PHANTOM_LABELS, make_case
    from medsynth.io.nifti import load_volume, save_volume
    from medsynth.models import build_generator
    from medsynth.models.registry import ModelSpec

    spec = ModelSpec(g_channels=(16, 16, 8), d_channels=(8, 16), z_dim=4, spade_hidden=8)
    labels = [{"name": n, "values": [v]} for v, n in sorted(PHANTOM_LABELS.items())]
    data = {"labels": labels, "modality": "CT", "preprocess": {"spacing_xy": 8.0, "ct_window": [-1000, 1000]},
            "slice": {"size": 32}}
    save_checkpoint(tmp_path / "g.pt", {"ema": build_generator(spec, 10).state_dict(), "model": spec.to_dict(),
                                        "num_classes": 10, "data": data})
    case = make_case(1, seed=0, shape=(48, 48, 6), spacing=(6.0, 6.0, 8.0))  # stored LPS
    save_volume(tmp_path / "maps" / "p1.nii.gz", case.label, case.affine)
    other = make_case(0, seed=1, shape=(40, 40, 5), spacing=(5.0, 5.0, 5.0))  # another study of p1
    save_volume(tmp_path / "maps" / "p1.study2.nii.gz", other.label, other.affine)
    code = main(["generate", "--labels", str(tmp_path / "maps"), "--checkpoint", str(tmp_path / "g.pt"),
                 "--out", str(tmp_path / "out"), "--samples", "2", "--device", "cpu"])
    assert code == 0 and "manifest" in capsys.readouterr().out
    rows = read_tsv(tmp_path / "out" / "manifest.tsv")
    # Names that differ after a first dot are two cases, each in its own folder.
    assert [(r["case_id"], r["sample"]) for r in rows] == [("p1", "0"), ("p1", "1"), ("p1.study2", "0"),
                                                           ("p1.study2", "1")]
    for r in rows:
        source = case if r["case_id"] == "p1" else other
        vol = load_volume(r["volume"])
        np.testing.assert_allclose(vol.affine, source.affine, atol=1e-6)  # back on the label map's own grid
        assert vol.array.shape == source.label.shape and vol.array.dtype == np.int16
        np.testing.assert_array_equal(load_volume(r["label"]).array, source.label)
    # Two maps of one name would overwrite each other: refused before any is generated, naming both.
    save_volume(tmp_path / "twice" / "p2.nii.gz", case.label, case.affine)
    save_volume(tmp_path / "twice" / "p2.nii", case.label, case.affine)
    assert main(["generate", "--labels", str(tmp_path / "twice"), "--checkpoint", str(tmp_path / "g.pt"),
                 "--out", str(tmp_path / "o2"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "p2.nii and" in err and "p2.nii.gz" in err and "'p2'" in err and not (tmp_path / "o2").exists()
    assert main(["generate", "--labels", str(tmp_path / "empty"), "--checkpoint", str(tmp_path / "g.pt"),
                 "--out", str(tmp_path / "o")]) == 2


def test_each_workflow_stage_has_a_command_that_plans_only_up_to_it(tmp_path, monkeypatch, capfd):
    from tiny_workflow import no_controller_env

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", no_controller_env()["PATH"])
    config = Path(__file__).resolve().parents[1] / "config" / "config.yaml"
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(config.read_text())
    assert main(["evaluate", "--experiment", "demo", "--dry-run"]) == 0
    out = capfd.readouterr().out
    stats = out[out.index("Job stats"):].split("\n\n")[0].splitlines()[3:]  # "rule  count" rows, then total
    planned = {line.split()[0] for line in stats} - {"total"}
    assert {"evaluate", "generate", "train", "split"} <= planned  # the stage and what it needs
    assert not planned & {"report_summary", "export", "utility"} and "demo-unpaired" not in out
    assert main(["split", "--experiment", "demo"]) == 2  # a per-dataset stage takes no experiment
    assert "leave out --experiment" in capfd.readouterr().err


def test_train_runs_the_workflows_patient_checks_before_training(tmp_path, monkeypatch, capsys):
    """Unpaired, phantom_001 is test in the label dataset and train in the image dataset: `medsynth train`
    refuses as the workflow's training does, before anything trains."""
    import medsynth.train.run as run
    from medsynth.data.split import SPLIT_COLUMNS
    from medsynth.io.tables import write_tsv

    parts = {"phantom": {"phantom_000": "train", "phantom_001": "test", "phantom_002": "val"},
             "phantom_mr": {"phantom_000": "train", "phantom_001": "train", "phantom_002": "val"}}
    for dataset, part in parts.items():
        write_tsv(tmp_path / "split" / dataset / "split.tsv",
                  [{"case_id": c, "patient_id": c, "part": q} for c, q in part.items()], SPLIT_COLUMNS)
        for case in part:
            (tmp_path / "slices" / dataset / "cases" / case).mkdir(parents=True)
            (tmp_path / "slices" / dataset / "cases" / case / "slices.npz").touch()
    started = []
    monkeypatch.setattr(run, "run_experiment", lambda *args, **kwargs: started.append(args))
    config = str(Path(__file__).resolve().parents[1] / "config" / "config.yaml")
    assert main(["train", "--config", config, "--experiment", "demo-unpaired", "--results", str(tmp_path)]) == 2
    assert "phantom_001 (test in the label dataset, train in the image dataset)" in capsys.readouterr().err
    assert started == []
    parts["phantom_mr"]["phantom_001"] = "test"  # the same part in both: it trains
    write_tsv(tmp_path / "split" / "phantom_mr" / "split.tsv",
              [{"case_id": c, "patient_id": c, "part": q} for c, q in parts["phantom_mr"].items()], SPLIT_COLUMNS)
    assert main(["train", "--config", config, "--experiment", "demo-unpaired", "--results", str(tmp_path)]) == 0
    assert len(started) == 1


def test_train_checks_a_fine_tunings_source_whatever_the_working_folder(tmp_path, monkeypatch, capsys):
    """ft fine-tunes demo-unpaired's generator (config-relative path), run with --results elsewhere: the MR
    dataset it learnt from trained on phantom_001, which ft tests on."""
    import yaml

    from medsynth.data.split import SPLIT_COLUMNS
    from medsynth.io.tables import write_tsv

    repo = Path(__file__).resolve().parents[1]
    config = yaml.safe_load((repo / "config" / "config.yaml").read_text())
    config["experiments"]["ft"] = {"dataset": "phantom", "train": {
        **config["experiments"]["demo"]["train"], "init_from": "results/select/demo-unpaired/generator.pt"}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    results = tmp_path / "run" / "results"
    parts = {"phantom": {"phantom_000": "train", "phantom_001": "test", "phantom_002": "val"},
             "phantom_mr": {"phantom_000": "train", "phantom_001": "train", "phantom_002": "val"}}
    for dataset, part in parts.items():
        write_tsv(results / "split" / dataset / "split.tsv",
                  [{"case_id": c, "patient_id": c, "part": q} for c, q in part.items()], SPLIT_COLUMNS)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert main(["train", "--config", str(tmp_path / "config.yaml"), "--experiment", "ft",
                 "--results", str(results)]) == 2
    assert "phantom_001 (test in" in capsys.readouterr().err
