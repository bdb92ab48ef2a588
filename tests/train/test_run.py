"""An experiment from slice files (medsynth.train.run): what it says before training."""

from __future__ import annotations

import numpy as np

from medsynth.data.slicing import unlearnt_classes

LABELS = [{"name": "background", "values": [0]}, {"name": "liver", "values": [1]},
          {"name": "thyroid", "values": [2]}, {"name": "body", "values": [3]}]


def _slices(path, counts):
    np.savez(path, z=np.arange(2), **({} if counts is None else {"class_voxels": np.array(counts)}))
    return path


def test_a_class_in_no_training_slice_is_named_before_training(tmp_path, monkeypatch, caplog) -> None:
    """The thyroid is in neither training case's slices: the log says so before any step."""
    import medsynth.train.run as run

    files = [_slices(tmp_path / "a.npz", [900, 40, 0, 300]), _slices(tmp_path / "b.npz", [800, 0, 0, 200])]
    monkeypatch.setattr(run, "load_slices", lambda *args: None)
    monkeypatch.setattr(run, "train", lambda *args, **kwargs: {"trained": True})
    with caplog.at_level("WARNING"):
        assert run.run_experiment({"steps": 1}, LABELS, tmp_path / "run", files, files) == {"trained": True}
    assert "classes in no training slice: thyroid (2); the generator cannot learn them" in caplog.text
    # A count beyond a file's stored length is zero; a file from before the counts says nothing.
    assert unlearnt_classes([_slices(tmp_path / "c.npz", [9, 9])], [e["name"] for e in LABELS]) == [
        "thyroid (2)", "body (3)"]
    assert unlearnt_classes([files[0], _slices(tmp_path / "old.npz", None)], ["background", "liver"]) is None
