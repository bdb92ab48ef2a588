"""Neighbouring-slice context: the right neighbours, the volume's edges repeated, cases kept apart."""

import numpy as np
import pytest

from medsynth.data.slice_context import context_labels, context_offsets, neighbour_index


def test_offsets_run_below_then_above_and_refuse_out_of_range():
    assert context_offsets(0) == []
    assert context_offsets(2) == [-2, -1, 1, 2]
    with pytest.raises(ValueError, match="train.context_slices"):
        context_offsets(-1)
    with pytest.raises(ValueError, match="train.context_slices"):
        context_offsets(5)


def test_neighbours_repeat_the_edge_and_never_cross_into_another_case():
    # Case a: z 3..6; case b: z 0..1 stored first; each slice's label is its own row number.
    case_ids = ["b", "b", "a", "a", "a", "a"]
    z = [0, 1, 3, 4, 5, 6]
    near = neighbour_index(case_ids, z, 2)  # columns: -2, -1, +1, +2
    assert near[2].tolist() == [2, 2, 3, 4]  # a's first slice: below it repeats itself
    assert near[3].tolist() == [2, 2, 4, 5]  # one below exists, two below is past the edge
    assert near[5].tolist() == [3, 4, 5, 5]  # a's last slice: above repeats itself
    assert near[0].tolist() == [0, 0, 1, 1]  # b ends at z 1: never a's z 3
    assert near[1].tolist() == [0, 0, 1, 1]


def test_a_gap_in_the_kept_slices_stops_the_walk_at_the_last_slice_before_it():
    near = neighbour_index(["a"] * 4, [0, 1, 3, 4], 2)  # z 2 dropped by the slicing rule
    assert near[1].tolist() == [0, 0, 1, 1]  # z 1: +1 (z 2) is missing, so +2 (z 3) is not reached either
    assert near[2].tolist() == [2, 2, 3, 3]


def test_context_labels_hold_the_neighbours_maps_in_offset_order():
    labels = np.arange(4, dtype=np.uint8)[:, None, None] * np.ones((1, 2, 3), np.uint8)
    ctx = context_labels(labels, ["a"] * 4, [10, 11, 12, 13], 1)
    assert ctx.shape == (4, 2, 2, 3)
    assert ctx[:, :, 0, 0].tolist() == [[0, 1], [0, 2], [1, 3], [2, 3]]
    assert context_labels(labels, ["a"] * 4, [10, 11, 12, 13], 0).shape == (4, 0, 2, 3)


def test_two_slices_at_one_position_are_refused():
    with pytest.raises(ValueError, match="one slice per position"):
        neighbour_index(["a", "a"], [1, 1], 1)
