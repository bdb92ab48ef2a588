"""Fine-tuning (train.init_from): classes matched by name, refusals that name both sides."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest
import torch

from toy_run import TOY_SPEC, toy_settings

from medsynth.io.checkpoint import load_checkpoint
from medsynth.train.context import build_context
from medsynth.train.init_from import initialise
from medsynth.train.loop import train
from medsynth.train.state import new_state

SOURCE_TABLE = [{"name": "background", "values": [0]}, {"name": "body", "values": [1]},
                {"name": "liver", "values": [2]}]
# liver dropped, spleen added (before body: the shared body class moves from id 1 to 2)
TARGET_TABLE = [{"name": "background", "values": [0]}, {"name": "spleen", "values": [2]},
                {"name": "body", "values": [1]}]


@pytest.fixture
def source_run(tmp_path, toy_set):
    """A finished toy run on SOURCE_TABLE: its folder."""
    run_dir = tmp_path / "source"
    train(toy_settings(steps=3), 3, toy_set, toy_set, run_dir, spec=TOY_SPEC, config={"labels": SOURCE_TABLE})
    return run_dir


def fine_tune_start(tmp_path, toy_set, source, spec=TOY_SPEC, **kw):
    """Context and state of a fine-tuning run on TARGET_TABLE, initialised from ``source``."""
    settings = toy_settings(init_from=str(source), **kw)
    ctx = build_context(settings, 3, toy_set, toy_set, tmp_path / "tuned", spec=spec, config={"labels": TARGET_TABLE})
    state = new_state(ctx.settings, ctx.spec, ctx.num_classes, ctx.device, ctx.rank)
    fresh = {k: v.clone() for k, v in state.nets.G.state_dict().items()}
    fresh_d = {k: v.clone() for k, v in state.nets.D.state_dict().items()}
    match = initialise(state.nets, settings, source, ctx.spec, ctx.slice_size, ctx.class_names, TARGET_TABLE)
    return ctx, state, match, fresh, fresh_d


@pytest.mark.parametrize("name", ["latest.pt", "ema_step_000003.pt"])
def test_shared_classes_keep_their_weights_new_ones_start_fresh(tmp_path, toy_set, source_run, name, caplog):
    source = source_run / "checkpoints" / name
    with caplog.at_level(logging.INFO, logger="medsynth.train.init_from"):
        _, state, match, fresh, fresh_d = fine_tune_start(tmp_path, toy_set, source)
    assert (match.shared, match.new, match.dropped) == (("background", "body"), ("spleen",), ("liver",))
    log = caplog.text
    assert "['background', 'body']" in log and "['spleen']" in log and "['liver']" in log
    # liver (dropped) and spleen (new) both take label value 2: a renamed class, most likely. latest.pt keeps
    # its label table; a snapshot names its classes only, so no warning can be made from it.
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    if name == "latest.pt":
        assert match.renamed == (("liver", "spleen"),)
        assert any("'liver'" in w and "'spleen'" in w and "[2]" in w for w in warned), warned
    else:
        assert match.renamed == () and not warned
    src = load_checkpoint(source)
    g_src = src.get("G", src["ema"])
    g = state.nets.G.state_dict()
    for key in ("fc.weight", "blocks.0.norm_0.shared.0.weight"):
        # target channel 0 = background = source 0; 1 = spleen: fresh; 2 = body = source 1; then the noise
        torch.testing.assert_close(g[key][:, 0], g_src[key][:, 0], rtol=0, atol=0)
        torch.testing.assert_close(g[key][:, 1], fresh[key][:, 1], rtol=0, atol=0)
        torch.testing.assert_close(g[key][:, 2], g_src[key][:, 1], rtol=0, atol=0)
        torch.testing.assert_close(g[key][:, 3:], g_src[key][:, 3:], rtol=0, atol=0)
    torch.testing.assert_close(g["conv_img.weight"], g_src["conv_img.weight"], rtol=0, atol=0)
    d = state.nets.D.state_dict()
    if "D" in src:  # rows: fake, then the classes
        for row_new, row_old in ((0, 0), (1, 1), (3, 2)):
            torch.testing.assert_close(d["out.weight"][row_new], src["D"]["out.weight"][row_old], rtol=0, atol=0)
        torch.testing.assert_close(d["out.weight"][2], fresh_d["out.weight"][2], rtol=0, atol=0)
    else:  # a snapshot holds no discriminator: D stays as initialised, and the log says so
        torch.testing.assert_close(d["out.weight"], fresh_d["out.weight"], rtol=0, atol=0)
        assert "holds no discriminator D; it starts fresh" in log


def test_the_same_table_carries_the_optimiser_state(tmp_path, toy_set, source_run):
    settings = toy_settings(init_from=str(source_run / "checkpoints" / "latest.pt"), lr_g=3e-5)
    ctx = build_context(settings, 3, toy_set, toy_set, tmp_path / "tuned", spec=TOY_SPEC,
                        config={"labels": SOURCE_TABLE})
    state = new_state(ctx.settings, ctx.spec, ctx.num_classes, ctx.device, ctx.rank)
    match = initialise(state.nets, settings, source_run / "checkpoints" / "latest.pt", ctx.spec, ctx.slice_size,
                       ctx.class_names)
    assert match.identity
    src = load_checkpoint(source_run / "checkpoints" / "latest.pt")
    moments = state.nets.opt_g.state_dict()["state"]
    assert moments and torch.equal(moments[0]["exp_avg"], src["opt_g"]["state"][0]["exp_avg"])
    assert state.nets.opt_g.param_groups[0]["lr"] == 3e-5  # this run's learning rate


def test_a_fine_tuning_run_trains_and_is_a_new_run_identified_by_the_source(tmp_path, toy_set, source_run):
    source = source_run / "checkpoints" / "latest.pt"
    summary = train(toy_settings(steps=3, init_from=str(source)), 3, toy_set, toy_set, tmp_path / "tuned",
                    spec=TOY_SPEC, config={"labels": TARGET_TABLE})
    assert summary["steps"] == 3
    latest = load_checkpoint(tmp_path / "tuned" / "checkpoints" / "latest.pt")
    assert latest["classes"] == ["background", "spleen", "body"]
    assert latest["init_from"]["path"] == str(source) and len(latest["init_from"]["digest"]) == 16

    def fingerprint(path):
        s = toy_settings(init_from=str(path))
        return build_context(s, 3, toy_set, toy_set, tmp_path / "x", spec=TOY_SPEC,
                             config={"labels": TARGET_TABLE}).fingerprint

    scratch = build_context(toy_settings(), 3, toy_set, toy_set, tmp_path / "x", spec=TOY_SPEC,
                            config={"labels": TARGET_TABLE}).fingerprint
    other = source_run / "checkpoints" / "ema_step_000003.pt"
    assert fingerprint(source) == latest["fingerprint"]
    assert len({scratch, fingerprint(source), fingerprint(other)}) == 3


def test_another_architecture_is_refused_naming_both(tmp_path, toy_set, source_run):
    wider = replace(TOY_SPEC, g_channels=(32, 16, 8))
    with pytest.raises(ValueError, match=r"g_channels \(16, 16, 8\) vs \(32, 16, 8\)"):
        fine_tune_start(tmp_path, toy_set, source_run / "checkpoints" / "latest.pt", spec=wider)
    with pytest.raises(ValueError, match="with context_slices 0, this run is .* with context_slices 1"):
        fine_tune_start(tmp_path, toy_set, source_run / "checkpoints" / "latest.pt", context_slices=1)


def test_another_slice_size_is_refused(tmp_path, make_toy_slices, source_run):
    bigger = make_toy_slices(size=64)
    with pytest.raises(ValueError, match="32 px slices, this run.s are 64 px"):
        fine_tune_start(tmp_path, bigger, source_run / "checkpoints" / "latest.pt")


def test_a_corrupt_or_missing_file_is_refused(tmp_path, toy_set, source_run):
    bad = tmp_path / "generator.pt"
    data = (source_run / "checkpoints" / "latest.pt").read_bytes()
    bad.write_bytes(data[: len(data) // 3])
    with pytest.raises(ValueError, match=f"{bad}: not a readable medsynth checkpoint"):
        fine_tune_start(tmp_path, toy_set, bad)
    with pytest.raises(FileNotFoundError, match="train.init_from names no file"):
        fine_tune_start(tmp_path, toy_set, tmp_path / "nowhere.pt")


def test_the_label_values_of_a_source_come_from_its_table_where_it_keeps_one():
    from medsynth.train.init_from import source_label_values

    values = {"background": (0,), "body": (1,), "liver": (2,)}
    assert source_label_values({"config": {"labels": SOURCE_TABLE}}) == values  # latest.pt
    assert source_label_values({"data": {"labels": SOURCE_TABLE}}) == values  # an exported generator.pt
    assert source_label_values({"classes": ["background", "body", "liver"]}) == {}  # an EMA snapshot: names only
