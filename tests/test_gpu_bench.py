"""bench/gpu_table.py is the one prepared script a session lent a GPU runs at once: it must work the first
time there. On the CPU with the tiny preset, every part but torch.compile (skipped by its budget) runs."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_gpu_table_runs_every_part_on_the_cpu(tmp_path, monkeypatch):
    out = tmp_path / "gpu"
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))  # its weights (~300 MB) are written there, then removed
    (tmp_path / "tmp").mkdir()
    cmd = [sys.executable, str(REPO / "bench" / "gpu_table.py"), "--out", str(out), "--device", "cpu",
           "--preset", "tiny", "--size", "32", "--batches", "2", "4", "--iters", "2", "--warmup", "1",
           "--eval-slices", "4", "--search-train", "64",
           "--skip-compile"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    kinds = [r["kind"] for r in rows]
    assert "error" not in kinds, [r for r in rows if r["kind"] == "error"]
    train = [r for r in rows if r["kind"] == "train"]
    assert len(train) == 16 + 3  # the grid, then three rows with cuDNN autotuning
    assert all(r["finite"] and r["s_iter"] > 0 and math.isclose(r["images_s"], r["batch"] / r["s_iter"], rel_tol=0.01)
               for r in train)
    assert {(r["mode"], r["batch"], r["precision"], r["channels_last"]) for r in train[:16]} == {
        (m, b, p, c) for m in ("paired", "unpaired") for b in (2, 4) for p in ("fp32", "bf16") for c in (True, False)}
    assert [r["precision"] for r in rows if r["kind"] == "profile"] == ["fp32", "bf16"]
    assert (out / "profile_fp32.txt").stat().st_size > 0 and (out / "profile_bf16.txt").stat().st_size > 0
    assert [r["slices_s"] > 0 and r["finite"] for r in rows if r["kind"] in ("generate", "evaluate")] == [True] * 5
    search = [r for r in rows if r["kind"] == "search"]
    assert len(search) == 1 and search[0]["same_as_cpu"] and search[0]["finite"] and search[0]["pairs_s"] > 0, search
    assert sum(r["kind"] == "skipped" and "compile" in r["why"] for r in rows) == 3  # said, not silent
    assert "| paired | 4 | bf16 | on | off | on |" in done.stdout  # the table, last
    assert not list((tmp_path / "tmp").glob("gpu-table-weights-*"))  # its weights are not left behind
