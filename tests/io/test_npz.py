"""Slice counts from the files' headers: what planning sizes a job's memory by."""

from pathlib import Path

import numpy as np

from medsynth.data.slicing import CaseSlices
from medsynth.io.npz import slices_in


def _case(path: Path, n: int) -> Path:
    labels = np.zeros((n, 4, 4), np.uint8)
    return CaseSlices(np.zeros((n, 4, 4), np.float32), labels, labels, np.arange(n, dtype=np.int32),
                      np.zeros((n, 2), np.int32)).save(path)


def test_slices_are_counted_from_the_headers_and_none_while_a_file_is_missing(tmp_path: Path) -> None:
    files = [_case(tmp_path / "a" / "slices.npz", 3), _case(tmp_path / "b" / "slices.npz", 5)]
    assert slices_in(files) == 8 and slices_in([]) == 0
    assert slices_in([*files, tmp_path / "c" / "slices.npz"]) is None and slices_in([None]) is None
    (tmp_path / "empty.npz").touch()  # a damaged or placeholder file: planning goes on with its default
    (tmp_path / "other.npz").write_bytes(b"PK\x05\x06" + bytes(18))  # an empty zip: no images array
    assert slices_in([*files, tmp_path / "empty.npz"]) is None and slices_in([tmp_path / "other.npz"]) is None
