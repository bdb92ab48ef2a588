"""Streaming helpers: chunks of a set reach a model in the batches of the joined set."""

from pathlib import Path

import numpy as np
import pytest
import torch

from medsynth.data.slice_batches import Rebatch, slice_chunks
from medsynth.io.npz import npz_shape
from medsynth.data.slicing import CaseSlices


def test_rebatch_hands_on_the_batches_of_the_joined_set() -> None:
    joined = torch.arange(22.0)
    seen = []
    run = Rebatch(lambda x, y: seen.append((x.clone(), y.clone())) or len(x), 4)
    at = 0
    for n in (3, 7, 1, 10, 1):  # chunks end inside batches, and one batch spans three chunks
        run.push(joined[at:at + n], -joined[at:at + n])
        at += n
    assert run.close() == [4, 4, 4, 4, 4, 2]
    for i, (x, y) in enumerate(seen):
        assert torch.equal(x, joined[4 * i:4 * i + 4]) and torch.equal(y, -x)
    assert Rebatch(lambda x: None, 3).close() == []  # nothing pushed, nothing run
    with pytest.raises(ValueError, match="different lengths"):
        Rebatch(lambda x, y: None, 2).push(joined[:2], joined[:3])
    with pytest.raises(ValueError, match=">= 1"):
        Rebatch(lambda x: None, 0)


def test_slice_chunks_reads_cases_in_the_order_of_their_ids_as_stored(tmp_path: Path) -> None:
    files = []
    for case, n in (("b", 2), ("a", 3)):
        images = np.full((n, 4, 4), 0.5 if case == "a" else -0.5, np.float32)
        masks = np.ones((n, 4, 4), np.uint8)
        files.append(CaseSlices(images, masks, masks, np.arange(n), np.zeros((n, 2), np.int32))
                     .save(tmp_path / case / "slices.npz"))
    chunks = list(slice_chunks(files))
    assert [len(images) for images, _ in chunks] == [3, 2] and chunks[0][0].dtype == torch.float16
    assert float(chunks[0][0][0, 0, 0]) == 0.5
    labels, = next(slice_chunks(files, ("labels",)))
    assert labels.dtype == torch.uint8 and npz_shape(files[1], "images") == (3, 4, 4)
    np.savez_compressed(tmp_path / "s.npz", samples=np.zeros((2, 5, 4, 4), np.float16))
    assert npz_shape(tmp_path / "s.npz", "samples") == (2, 5, 4, 4)  # a deflated member too
