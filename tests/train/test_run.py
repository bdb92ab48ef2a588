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


def test_a_finished_run_leaves_no_spilled_slices(tmp_path, monkeypatch) -> None:
    """Slices beyond ram_cache_gb are memory-mapped files under results/train/<e>/cache/ (at AutoPET's size
    ~65 GB a process, on the cluster's shared file system): a finished training removes them."""
    import medsynth.train.run as run
    from medsynth.data.slicing import CaseSlices

    files = []
    for case in ("a", "b"):
        n = 3
        CaseSlices(np.zeros((n, 8, 8), np.float16), np.ones((n, 8, 8), np.uint8), np.ones((n, 8, 8), np.uint8),
                   np.arange(n, dtype=np.int32), np.zeros((n, 2), np.int32)).save(tmp_path / case / "slices.npz")
        files.append(tmp_path / case / "slices.npz")
    spilled = []

    def fake_train(settings, num_classes, train_set, val_set, run_dir, **kwargs):
        spilled.extend(sorted(p.name for p in (run_dir / "cache" / "train").iterdir()))
        return {"trained": True}

    monkeypatch.setattr(run, "train", fake_train)
    out = run.run_experiment({"steps": 1, "ram_cache_gb": 0}, LABELS, tmp_path / "run", files[:1], files[1:])
    assert out == {"trained": True} and "images.npy" in spilled  # the training read them from disk
    assert not (tmp_path / "run" / "cache").exists()
