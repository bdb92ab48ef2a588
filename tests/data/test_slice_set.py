"""The slice set's neighbouring-slice context and the generator's label input."""

import torch

from medsynth.data.slice_set import SliceSet, evenly_spaced, generator_input, one_hot


def _set(n=6):
    labels = torch.arange(n, dtype=torch.uint8)[:, None, None].expand(n, 4, 4) % 3
    return SliceSet(torch.zeros(n, 1, 4, 4), labels, torch.ones(n, 1, 4, 4), ["a"] * 3 + ["b"] * 3,
                    [0, 1, 2, 0, 1, 2])


def test_a_subset_keeps_the_true_neighbours_of_the_whole_set():
    full = _set().with_context(1)
    assert full.context_slices == 1 and full.context.shape == (6, 2, 4, 4)
    part = evenly_spaced(full, 3)  # rows 0, 2 (rounded from 2.5), 5
    for row, i in zip(part.context, [0, 2, 5]):
        assert torch.equal(row, full.context[i])
    assert torch.equal(part.context[0, 1], full.labels[1])  # slice 0's neighbour above is row 1, not in part
    assert _set().context.shape == (6, 0, 4, 4) and _set().context_slices == 0


def test_generator_input_is_the_slice_then_its_neighbours_one_hot():
    data = _set().with_context(1)
    idx = torch.tensor([1, 3])
    _, labels, _ = data.batch(idx, torch.device("cpu"))
    context = data.context_batch(idx, torch.device("cpu"))
    x = generator_input(labels, context, 3)
    assert x.shape == (2, 9, 4, 4)
    assert torch.equal(x[:, :3], one_hot(labels, 3))
    assert torch.equal(x[:, 3:6], one_hot(context[:, 0], 3)) and torch.equal(x[:, 6:], one_hot(context[:, 1], 3))
    assert torch.equal(generator_input(labels, None, 3), one_hot(labels, 3))
