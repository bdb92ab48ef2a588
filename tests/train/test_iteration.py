"""One iteration: the batch it draws, the step it takes, its losses brought to the host in one transfer."""

from pathlib import Path

import pytest
import torch

from medsynth.train.iteration import NonFiniteLoss, check_finite, draw_batch, iterate, losses_to_floats
from medsynth.train.step import paired_step


def test_losses_become_the_floats_item_gives_in_one_transfer(monkeypatch):
    losses = {"loss_b": torch.tensor(0.1), "loss_a": torch.tensor(1 / 3, dtype=torch.bfloat16),
              "loss_c": torch.tensor(float("nan"))}
    expected = {k: v.item() for k, v in losses.items()}

    def no_item(self):
        raise AssertionError(".item() syncs once per loss")

    monkeypatch.setattr(torch.Tensor, "item", no_item)
    floats = losses_to_floats(losses)
    assert list(floats) == ["loss_b", "loss_a", "loss_c"]  # the columns keep the step's order
    assert all(type(v) is float for v in floats.values())
    assert floats["loss_a"] == expected["loss_a"] and floats["loss_b"] == expected["loss_b"]
    assert floats["loss_c"] != floats["loss_c"]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_a_non_finite_loss_names_step_loss_and_the_last_good_checkpoint(value):
    row = {"step": 7, "loss_g": 1.0, "loss_d_fake": value, "seconds": 0.1}
    with pytest.raises(NonFiniteLoss, match=rf"step 7: loss_d_fake={value}; .* /run/latest.pt"):
        check_finite(row, 7, Path("/run/latest.pt"))
    check_finite({**row, "loss_d_fake": 2.0, "seconds": float("inf")}, 7, Path("/run/latest.pt"))  # not a loss


def test_an_iteration_is_the_drawn_batch_through_the_step(toy_run):
    ctx, state = toy_run()
    _, twin = toy_run()
    noise = torch.get_rng_state()  # G draws its noise from the global generator
    row = iterate(ctx, state, ctx.ckpt_dir / "latest.pt")
    assert state.step == 1 and list(row) == ctx.loss_columns
    # The same batch and step by hand, from an identical state: bit-identical losses.
    torch.set_rng_state(noise)
    real, labels, body = draw_batch(ctx, twin)
    by_hand = paired_step(twin.nets, real, labels, body, 3, ctx.weights, twin.mix_rng, False)
    assert {k: row[k] for k in by_hand} == {k: v.item() for k, v in by_hand.items()}
    assert row["seconds"] >= 0
    for a, b in zip(state.nets.G.parameters(), twin.nets.G.parameters()):
        assert torch.equal(a, b)


def test_unpaired_batches_take_their_images_from_dataset_b(toy_run):
    ctx, state = toy_run(mode="unpaired", batch_size=3)
    replay = torch.Generator().set_state(state.data_rng.get_state())
    real, labels, body = draw_batch(ctx, state)
    idx = torch.randint(len(ctx.train_data), (3,), generator=replay)
    jdx = torch.randint(len(ctx.real_train), (3,), generator=replay)
    assert torch.equal(labels, ctx.train_data.labels[idx].long())
    assert torch.equal(body, ctx.train_data.masks[idx].float())
    assert torch.equal(real, ctx.real_train.images[jdx].float())
    assert not torch.equal(ctx.real_train.images, ctx.train_data.images)  # B really is another set of images
    row = iterate(ctx, state, ctx.ckpt_dir / "latest.pt")
    assert list(row) == ctx.loss_columns and "loss_du" in row
