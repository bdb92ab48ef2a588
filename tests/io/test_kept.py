"""Results kept for a retry (medsynth.io.kept): read back equal, types included, only under their key."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medsynth.io.kept import MISSING, Kept
from medsynth.io.tables import format_value


def test_rows_arrays_and_numpy_scalars_read_back_as_they_were(tmp_path):
    rows = [{"metric": "fid", "mean": np.float32(0.1), "std": np.float64(2.5), "n": np.int64(7), "note": "",
             "flagged": np.bool_(True), "nan": math.nan, "none": None}]
    value = (rows, {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array(["x", "yz"]),
                    "c": torch.ones(2, 2, dtype=torch.int64)}, None, [1, (2.0, "3")])
    kept = Kept(tmp_path / "work")
    kept.put("part", "key", value)
    back = kept.get("part", "key")
    row = back[0][0]
    for k, v in rows[0].items():  # the same type and value, so the same text in a table
        assert type(row[k]) is type(v) and format_value(row[k]) == format_value(v), k
    assert back[1]["a"].dtype == np.float32 and np.array_equal(back[1]["a"], value[1]["a"])
    assert back[1]["b"].tolist() == ["x", "yz"] and torch.equal(back[1]["c"], value[1]["c"])
    assert back[2] is None and back[3] == [1, (2.0, "3")] and isinstance(back[3][1], tuple)
    assert not list((tmp_path / "work").glob("*.part"))  # written to a temporary name, then renamed


def test_a_piece_is_read_back_only_under_its_key(tmp_path):
    kept = Kept(tmp_path / "work")
    assert kept.get("part", "key") is MISSING
    kept.put("part", "key", None)  # a piece may be None (no Inception weights): not MISSING
    assert kept.get("part", "key") is None
    assert kept.get("part", "other key") is MISSING and not kept.path("part").exists()
    kept.path("part").write_bytes(b"cut short")
    assert kept.get("part", "key") is MISSING and not kept.path("part").exists()
    kept.put("part", "key", 1)
    kept.remove()
    assert not (tmp_path / "work").exists()


def test_what_cannot_be_kept_is_refused_naming_where(tmp_path):
    with pytest.raises(TypeError, match=r"part\[0\]\['x'\]: a set cannot be kept"):
        Kept(tmp_path / "work").put("part", "key", [{"x": {1}}])


def test_without_a_folder_nothing_is_kept(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    kept = Kept(None)
    kept.put("part", "key", [1])
    assert kept.get("part", "key") is MISSING and not list(tmp_path.iterdir())
    kept.remove()
