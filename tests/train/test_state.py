"""A run's changing state: what its checkpoint holds, and restoring it to continue exactly."""

import torch

from medsynth.train.iteration import iterate
from medsynth.train.state import checkpoint_payload


def advanced(toy_run, steps=2):
    ctx, state = toy_run()
    for _ in range(steps):
        iterate(ctx, state, ctx.ckpt_dir / "latest.pt")
    state.history, state.best = [{"step": 2, "ssim": 0.5}], {"ssim": {"value": 0.5, "step": 2}}
    return ctx, state


def test_restoring_a_checkpoint_continues_the_batches_and_weights_where_they_were(toy_run):
    ctx, state = advanced(toy_run)
    saved = checkpoint_payload(ctx, state)
    assert saved["fingerprint"] == ctx.fingerprint and saved["world_size"] == 1 and saved["step"] == 2
    _, fresh = toy_run()
    fresh.restore(saved, 1, ctx.device)
    assert (fresh.step, fresh.history, fresh.best) == (2, state.history, state.best)
    for a, b in zip(state.nets.ema.model.state_dict().values(), fresh.nets.ema.model.state_dict().values()):
        assert torch.equal(a, b)
    assert torch.equal(torch.get_rng_state(), saved["rng"]["torch"])
    draws = [torch.randint(99, (8,), generator=s.data_rng) for s in (fresh, state)]
    assert torch.equal(*draws)
    assert torch.equal(fresh.mix_rng.get_state(), state.mix_rng.get_state())


def test_another_process_count_restores_the_weights_but_restarts_the_batch_streams(toy_run):
    ctx, state = advanced(toy_run)
    saved = checkpoint_payload(ctx, state)
    _, fresh = toy_run()
    seeded = fresh.data_rng.get_state()
    fresh.restore(saved, 2, ctx.device)
    assert fresh.step == 2 and torch.equal(fresh.data_rng.get_state(), seeded)
    assert not torch.equal(seeded, state.data_rng.get_state())
    assert all(torch.equal(a, b) for a, b in zip(state.nets.G.parameters(), fresh.nets.G.parameters()))
