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
    real, labels, body, _ = draw_batch(ctx, twin)
    by_hand = paired_step(twin.nets, real, labels, body, 3, ctx.weights, twin.mix_rng, False)
    assert {k: row[k] for k in by_hand} == {k: v.item() for k, v in by_hand.items()}
    assert row["seconds"] >= 0
    for a, b in zip(state.nets.G.parameters(), twin.nets.G.parameters()):
        assert torch.equal(a, b)


def test_unpaired_batches_take_their_images_from_dataset_b(toy_run):
    ctx, state = toy_run(mode="unpaired", batch_size=3)
    replay = torch.Generator().set_state(state.data_rng.get_state())
    real, labels, body, _ = draw_batch(ctx, state)
    idx = torch.randint(len(ctx.train_data), (3,), generator=replay)
    jdx = torch.randint(len(ctx.real_train), (3,), generator=replay)
    assert torch.equal(labels, ctx.train_data.labels[idx].long())
    assert torch.equal(body, ctx.train_data.masks[idx].float())
    assert torch.equal(real, ctx.real_train.images[jdx].float())
    assert not torch.equal(ctx.real_train.images, ctx.train_data.images)  # B really is another set of images
    row = iterate(ctx, state, ctx.ckpt_dir / "latest.pt")
    assert list(row) == ctx.loss_columns and "loss_du" in row


def test_unpaired_class_targets_are_dataset_b_s_class_stats_and_enter_g_s_loss(toy_run):
    ctx, state = toy_run(mode="unpaired", lambda_class_stats=2.0)
    b = ctx.real_train
    for c in range(3):
        inside = b.labels == c
        assert abs(ctx.class_targets[0, c].item() - b.images[:, 0][inside].float().mean().item()) < 1e-3
    assert torch.isfinite(ctx.class_targets[1]).all()
    row = iterate(ctx, state, ctx.ckpt_dir / "latest.pt")
    assert row["loss_g_class_stats"] > 0
    assert toy_run(mode="unpaired")[0].class_targets is None  # weight 0: nothing computed, loss column 0


def test_mode_seeking_batches_hold_each_label_map_twice(toy_run):
    ctx, state = toy_run(batch_size=4, lambda_diversity=1.0)
    _, labels, body, _ = draw_batch(ctx, state)
    assert torch.equal(labels[:2], labels[2:]) and torch.equal(body[:2], body[2:])
    row = iterate(ctx, state, ctx.ckpt_dir / "latest.pt")
    assert row["loss_g_diversity"] < 0  # two noises of one label map already give different images


def test_the_log_says_why_a_class_statistics_target_is_missing():
    from medsynth.train.context import class_target_gaps

    nan = float("nan")
    targets = torch.tensor([[0.1, 0.5, nan, 0.7], [0.02, nan, nan, 0.1]])
    absent, thin = class_target_gaps(targets, ("background", "aorta", "spleen", "liver"))
    assert "show no pixel of spleen;" in absent and "aorta" not in absent
    assert thin.startswith("class-statistics targets: aorta never covers 16 pixels") and "only its mean" in thin
    (both,) = class_target_gaps(torch.tensor([[0.5, 0.6], [nan, nan]]), ("aorta", "kidney"))
    assert "aorta, kidney never cover 16 pixels" in both and "only their mean" in both
    assert class_target_gaps(targets[:, [0, 3]], ("background", "liver")) == []
