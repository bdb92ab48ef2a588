"""An evaluate job stopped midway (a time limit, a node failure: Snakemake deletes its outputs and retries it)
keeps its finished parts: the retry computes only the others and writes the tables an uninterrupted run
writes; kept parts of other settings, inputs or code are computed again; the work folder goes once the
tables are written; called without a work folder (the tests, the benches) nothing is kept."""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from medsynth.evaluation import stages
from medsynth.evaluation.stages import (EVALUATE_PARTS, EVALUATE_TABLES, EVALUATE_WORK_DIR, EvaluateInputs,
                                       EvaluateSettings, evaluate_experiment, write_evaluate)
from medsynth.inference.generate_cases import generated_cases

# Each part's function, in the order evaluate_experiment runs them (features: the Inception features).
FUNCTIONS = {"features": "memorisation_features", "cases": "evaluate_cases",
             "segmentation": "segmentation_consistency", "class_intensity": "class_intensity",
             "through_plane": "through_plane_summary", "three_plane": "three_plane_summary",
             "memorisation": "memorisation_cases"}
CPU = torch.device("cpu")


class Stopped(RuntimeError):
    """The job killed at its time limit."""


@pytest.fixture
def cohort(tmp_path) -> dict:
    """Three test and three training cases; Inception features of the real test and training slices in the
    statistics files, so the audit in feature space runs (the weights are absent: FID stays NA)."""
    from memory_cohort import write_cohort

    c = write_cohort(tmp_path / "cohort", test_cases=3, train_cases=3, slices=4, size=16)
    rng = np.random.default_rng(1)
    for part, n in (("real_stats", len(c["test"]) * 4), ("train_stats", len(c["train"]) * 4)):
        np.savez(c[part], available=True, features=rng.normal(size=(n, 8)).astype(np.float32), n=n)
    return c


def _fake_features(generated, real_stats, train_stats, settings, device):
    """The generated slices' features as memorisation_features returns them, without Inception: a fixed
    draw per slice, so that every run computes the same."""
    gen = np.random.default_rng(2).normal(size=(len(generated.keys), 8)).astype(np.float32)
    with np.load(real_stats) as real, np.load(train_stats) as train:
        return gen, real["features"], train["features"]


@pytest.fixture
def calls(monkeypatch) -> dict:
    """Counts each part's calls; ``stop_in``: the part whose function kills the job."""
    counts = {**dict.fromkeys(EVALUATE_PARTS, 0), "stop_in": None}
    monkeypatch.setattr(stages, "memorisation_features", _fake_features)
    for part, name in FUNCTIONS.items():
        def counted(*args, _part=part, _function=getattr(stages, name), **kwargs):
            counts[_part] += 1
            if counts["stop_in"] == _part:
                raise Stopped("time limit")
            return _function(*args, **kwargs)

        monkeypatch.setattr(stages, name, counted)
    return counts


def _inputs(c: dict) -> EvaluateInputs:
    return EvaluateInputs(generated_cases(c["test"], Path(c["cases_dir"])), meta=c["meta"], reference=c["test"],
                          reference_meta=c["meta"], train_reference=c["train"], real_stats=Path(c["real_stats"]),
                          train_stats=Path(c["train_stats"]), segmenter=Path(c["segmenter"]))


def _settings(c: dict, threshold: float = 0.5, batch_size: int = 32) -> EvaluateSettings:
    metrics = {"weights_dir": str(Path(c["cases_dir"]).parent / "no-weights"), "perceptual": "auto",
               "batch_size": batch_size, "kid_subsets": 10, "kid_subset_size": 10,
               "memorisation_threshold": threshold}
    return EvaluateSettings(paired=True, metrics=metrics, names=c["names"], reference_names=c["names"],
                            not_computed="")


def _run(c: dict, out: Path, settings: EvaluateSettings | None = None) -> Path:
    """The rule's script: the tables in ``out``, the parts kept beside them until all are written."""
    work = out / EVALUATE_WORK_DIR
    tables = evaluate_experiment(_inputs(c), settings or _settings(c), CPU, work)
    write_evaluate({name: out / f"{name}.tsv" for name in EVALUATE_TABLES}, tables, work)
    return work


def _stop_in(c: dict, out: Path, calls: dict, part: str, settings: EvaluateSettings | None = None) -> None:
    calls.update(stop_in=part)
    with pytest.raises(Stopped):
        _run(c, out, settings)
    calls.update(dict.fromkeys(EVALUATE_PARTS, 0), stop_in=None)


def _tables(out: Path) -> dict[str, bytes]:
    return {name: (out / f"{name}.tsv").read_bytes() for name in EVALUATE_TABLES}


def test_a_stopped_run_computes_only_the_rest_and_writes_the_tables_of_an_uninterrupted_one(cohort, calls,
                                                                                           tmp_path, caplog):
    whole = tmp_path / "whole"
    work = _run(cohort, whole)
    assert not work.exists()  # gone once the tables are written
    assert "NA" not in {r.split("\t")[8] for r in _tables(whole)["memorisation"].decode().splitlines()[1:]}
    resumed = tmp_path / "resumed"
    _stop_in(cohort, resumed, calls, "memorisation")
    assert sorted(p.name for p in (resumed / EVALUATE_WORK_DIR).iterdir()) == sorted(
        f"{p}.pt" for p in EVALUATE_PARTS if p != "memorisation")
    with caplog.at_level(logging.INFO, logger="medsynth.evaluation.stages"):
        _run(cohort, resumed)
    assert {p: calls[p] for p in EVALUATE_PARTS} == {**dict.fromkeys(EVALUATE_PARTS, 0), "memorisation": 1}
    assert ("resuming: parts features, cases, segmentation, class_intensity, through_plane, three_plane "
            "already done") in caplog.text
    assert _tables(resumed) == _tables(whole)
    assert not (resumed / EVALUATE_WORK_DIR).exists()


def test_a_stop_in_an_early_part_keeps_the_parts_before_it(cohort, calls, tmp_path):
    out = tmp_path / "out"
    _stop_in(cohort, out, calls, "class_intensity")
    _run(cohort, out)
    assert {p: calls[p] for p in EVALUATE_PARTS} == {
        **dict.fromkeys(EVALUATE_PARTS, 1), "features": 0, "cases": 0, "segmentation": 0}


def _touch(path: str | Path) -> None:
    """The file written again (its job rerun) with the same bytes: a later time."""
    st = Path(path).stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))


@pytest.mark.parametrize("change", ["threshold", "generated samples", "real test slices", "training slices",
                                    "meta", "statistics", "segmenter", "code", "batch size"])
def test_kept_parts_of_other_settings_inputs_or_code_are_computed_again(cohort, calls, tmp_path, monkeypatch,
                                                                        change):
    out = tmp_path / "out"
    _stop_in(cohort, out, calls, "memorisation")
    settings = _settings(cohort)
    if change == "threshold":
        settings = _settings(cohort, threshold=0.6)
    elif change == "batch size":  # how fast the features are computed, not what: kept
        settings = _settings(cohort, batch_size=8)
    elif change == "code":
        monkeypatch.setattr(stages, "code_digest", lambda: "other code")
    else:
        _touch({"generated samples": _inputs(cohort).cases[0][2], "real test slices": cohort["test"][0],
                "training slices": cohort["train"][0], "meta": cohort["meta"][0],
                "statistics": cohort["real_stats"], "segmenter": cohort["segmenter"]}[change])
    _run(cohort, out, settings)
    again = 0 if change == "batch size" else 1
    assert {p: calls[p] for p in EVALUATE_PARTS} == {**dict.fromkeys(EVALUATE_PARTS, again), "memorisation": 1}
    assert not (out / EVALUATE_WORK_DIR).exists()


def test_other_classes_or_mode_are_computed_again(cohort, calls, tmp_path):
    out = tmp_path / "out"
    for settings in (replace(_settings(cohort), paired=False), replace(_settings(cohort), not_computed="x")):
        _stop_in(cohort, out, calls, "memorisation")
        _run(cohort, out, settings)
        assert calls["cases"] == calls["segmentation"] == 1


def test_an_unreadable_kept_part_is_computed_again(cohort, calls, tmp_path):
    out = tmp_path / "out"
    _stop_in(cohort, out, calls, "memorisation")
    (out / EVALUATE_WORK_DIR / "segmentation.pt").write_bytes(b"cut short")
    _run(cohort, out)
    assert (calls["cases"], calls["segmentation"], calls["memorisation"]) == (0, 1, 1)


def test_without_a_work_folder_nothing_is_written(cohort, calls, tmp_path):
    before = sorted(tmp_path.rglob("*"))
    tables = evaluate_experiment(_inputs(cohort), _settings(cohort), CPU)
    assert set(tables) == set(EVALUATE_TABLES) and all(calls[p] == 1 for p in EVALUATE_PARTS)
    assert sorted(tmp_path.rglob("*")) == before
