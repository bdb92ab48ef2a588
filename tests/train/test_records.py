"""The run folder's tables: live losses cut back to the resumed step, outputs published at the end."""

from medsynth.io.tables import read_tsv
from medsynth.train.records import finalize, loss_line, open_losses, start_live_tables

COLUMNS = ["step", "loss_g", "seconds"]


def write_losses(path, steps):
    with open_losses(path, COLUMNS) as fh:
        for step in steps:
            fh.write(loss_line({"step": step, "loss_g": step / 10, "seconds": 0.5}, COLUMNS))


def test_resuming_drops_the_loss_rows_after_the_checkpoint_and_appends_after_them(tmp_path):
    live = tmp_path / "live"
    write_losses(live / "losses.tsv", range(1, 8))
    start_live_tables(live, 4, [{"step": 2, "ssim": 0.5}, {"step": 4, "ssim": 0.6}], COLUMNS)
    write_losses(live / "losses.tsv", range(5, 7))  # the steps after the checkpoint, run again
    rows = read_tsv(live / "losses.tsv")
    assert [r["step"] for r in rows] == ["1", "2", "3", "4", "5", "6"]  # one header, no step twice
    assert rows[4]["loss_g"] == "0.5"
    assert [r["step"] for r in read_tsv(live / "metrics.tsv")] == ["2", "4"]


def test_finalize_publishes_the_declared_outputs(tmp_path):
    write_losses(tmp_path / "live" / "losses.tsv", range(1, 4))
    summary = finalize(tmp_path, [{"step": 3, "ssim": 0.5}])
    assert summary["steps"] == 3
    assert (tmp_path / "losses.tsv").read_text() == (tmp_path / "live" / "losses.tsv").read_text()
    assert read_tsv(tmp_path / "checkpoints.tsv") == [{"step": "3", "checkpoint": "checkpoints/ema_step_000003.pt"}]
    assert read_tsv(tmp_path / "metrics.tsv")[0]["ssim"] == "0.5"
