"""JSON records: written atomically (no temporary file left), read back, a broken one named."""

from __future__ import annotations

import pytest

from medsynth.io.jsonfile import read_json, write_json


def test_a_record_reads_back_and_replaces_the_previous_one(tmp_path):
    path = tmp_path / "sub" / "r.json"
    write_json(path, {"a": 1})
    write_json(path, {"a": 2, "b": [1, None]})
    assert read_json(path) == {"a": 2, "b": [1, None]}
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]


def test_a_broken_record_is_named(tmp_path):
    (tmp_path / "r.json").write_text('{"a": ')
    with pytest.raises(ValueError, match=r"r\.json: not a JSON file"):
        read_json(tmp_path / "r.json")
