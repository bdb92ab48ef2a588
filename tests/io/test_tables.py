"""Tables between stages: a missing value is NA whatever its number type; a written table reads back."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medsynth.io.tables import format_value, parse_float, read_tsv, write_tsv


@pytest.mark.parametrize("nan", [float("nan"), np.float64("nan"), np.float32("nan"), np.float16("nan"), None])
def test_a_missing_number_of_any_float_type_is_na(nan):
    assert format_value(nan) == "NA" and math.isnan(parse_float(format_value(nan)))


def test_numbers_round_trip_through_a_table(tmp_path):
    rows = [{"metric": "fid", "mean": 12.5, "n": 3, "std": np.float32(0.25), "note": ""},
            {"metric": "kid", "mean": np.float32("nan"), "n": 0, "std": None, "note": "not computed"}]
    back = read_tsv(write_tsv(tmp_path / "t.tsv", rows, ["metric", "mean", "std", "n", "note"]))
    assert back[0]["mean"] == "12.5" and parse_float(back[0]["std"]) == 0.25 and back[0]["n"] == "3"
    assert back[1]["mean"] == back[1]["std"] == "NA" and back[1]["note"] == "not computed"
