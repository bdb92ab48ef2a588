"""Atomic writes: the target appears whole or keeps its previous content; no temporary file is left."""

from __future__ import annotations

import numpy as np
import pytest

from medsynth.io.atomic import atomic_open, replacing
from medsynth.io import nifti
from medsynth.io.tables import read_tsv, write_tsv


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_part(tmp_path):
    path = tmp_path / "t.tsv"
    write_tsv(path, [{"a": 1}], ["a"])
    with pytest.raises(RuntimeError, match="disk"):
        with atomic_open(path) as fh:
            fh.write("a\n2\n")
            raise RuntimeError("disk full")
    assert read_tsv(path) == [{"a": "1"}]
    assert [p.name for p in tmp_path.iterdir()] == ["t.tsv"]


def test_a_writer_that_needs_its_ending_gets_it_and_the_part_goes(tmp_path, monkeypatch):
    path = tmp_path / "sub" / "v.nii.gz"
    with replacing(path, "v.nii.gz.part.nii.gz") as tmp:
        assert tmp.parent.is_dir() and tmp.name == "v.nii.gz.part.nii.gz"
        tmp.write_bytes(b"x")
    assert path.read_bytes() == b"x" and sorted(p.name for p in path.parent.iterdir()) == ["v.nii.gz"]

    # A volume whose write fails once its temporary file is open (a node's disk full, a stop signal).
    def fails(stream):
        stream.write(b"half a header")
        raise OSError("No space left on device")

    monkeypatch.setattr(nifti, "_single_file_map", fails)
    with pytest.raises(OSError, match="No space"):
        nifti.save_volume(path, np.zeros((2, 2, 2), np.int16), np.eye(4))
    assert path.read_bytes() == b"x" and sorted(p.name for p in path.parent.iterdir()) == ["v.nii.gz"]


def test_keep_previous_renames_the_old_file_only_when_the_new_one_is_complete(tmp_path):
    path, prev = tmp_path / "latest.pt", tmp_path / "latest.prev.pt"
    path.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_open(path, keep_previous=prev) as fh:
            fh.write("new")
            raise KeyboardInterrupt  # a job stopped mid-write
    assert path.read_text() == "old" and not prev.exists()
    with atomic_open(path, keep_previous=prev) as fh:
        fh.write("new")
    assert path.read_text() == "new" and prev.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.prev.pt", "latest.pt"]
