"""A utility job stopped midway (a time limit, a node failure: Snakemake deletes its outputs and retries it)
keeps its finished trainings: the retry trains only the others and writes the tables an uninterrupted
run writes; a kept training of other settings, inputs or code is trained again; the work folder goes once
the tables are written."""

import logging
import os
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from medsynth.evaluation import utility_curve
from medsynth.evaluation.stages import UtilityInputs, UtilitySettings, utility_experiment, write_utility
from medsynth.evaluation.utility_resume import WORK_DIR, Resumable
from medsynth.inference.generate_cases import samples_file
from medsynth.metrics.segmentation import SegmenterRecipe

SEG = SegmenterRecipe(steps=3, batch_size=4, channels=(4, 8))
# (a) and (b) at k = 1; (a) at k = 3, every patient: the segmenter rule's model, scored, not trained ((b) does
# not run: every synthetic case is of one of the three); (c).
UTILITY = {"real_patients": [1, "all"], "draws": 1, "bootstrap": 50, "seed": 0, "real_share": 0.5}
TRAINED, SCORED = 3, 4


class Stopped(RuntimeError):
    """The job killed at its time limit."""


@pytest.fixture
def cohort(tmp_path) -> dict:
    from memory_cohort import write_cohort

    return write_cohort(tmp_path / "cohort", test_cases=5, train_cases=3, slices=4, size=16)


def _inputs(c: dict) -> UtilityInputs:
    return UtilityInputs(real_model=Path(c["segmenter"]), real_train=c["train"], label_train=c["train"],
                         manifest=Path(c["manifest"]), cases_dir=Path(c["cases_dir"]), test=c["test"],
                         split=Path(c["split"]))


def _settings(c: dict, seg: SegmenterRecipe = SEG, **utility) -> UtilitySettings:
    return UtilitySettings(names=c["names"], image_names=c["names"], source="the image dataset x", segmenter=seg,
                           utility={**UTILITY, **utility})


@pytest.fixture
def calls(monkeypatch) -> dict:
    """Counts the trainings and the scorings; ``stop_at``: the training call that kills the job."""
    counts = {"train": 0, "score": 0, "stop_at": None}
    train, score = utility_curve.train_segmenter, utility_curve.score_confusions

    def counted_train(*args, **kwargs):
        counts["train"] += 1
        if counts["train"] == counts["stop_at"]:
            raise Stopped("time limit")
        return train(*args, **kwargs)

    def counted_score(*args, **kwargs):
        counts["score"] += 1
        return score(*args, **kwargs)

    monkeypatch.setattr(utility_curve, "train_segmenter", counted_train)
    monkeypatch.setattr(utility_curve, "score_confusions", counted_score)
    return counts


def _run(c: dict, out: Path, settings: UtilitySettings | None = None) -> Path:
    """The rule's script: the tables in ``out``, the trainings kept beside them until both are written."""
    work = out / WORK_DIR
    rows, draws = utility_experiment(_inputs(c), settings or _settings(c), torch.device("cpu"), work)
    write_utility(out / "utility.tsv", out / "draws.tsv", rows, draws, work)
    return work


def _stop_after(c: dict, out: Path, calls: dict, trained: int, settings: UtilitySettings | None = None) -> None:
    calls.update(stop_at=trained + 1)
    with pytest.raises(Stopped):
        _run(c, out, settings)
    calls.update(train=0, score=0, stop_at=None)


def test_a_stopped_run_trains_only_the_rest_and_writes_the_tables_of_an_uninterrupted_one(cohort, calls, tmp_path,
                                                                                         caplog):
    whole = tmp_path / "whole"
    work = _run(cohort, whole)
    assert (calls["train"], calls["score"]) == (TRAINED, SCORED)
    assert not work.exists() and (whole / "utility.tsv").is_file()  # gone once the tables are written
    calls.update(train=0, score=0)

    resumed = tmp_path / "resumed"
    _stop_after(cohort, resumed, calls, trained=2)  # (a) and (b) at k = 1 trained, (a) at k = 3 the rule's
    assert sorted(p.name for p in (resumed / WORK_DIR).iterdir()) == [
        "real+synthetic-k1-draw1.pt", "real-k1-draw1.pt", "real-k3-draw1.pt"]
    with caplog.at_level(logging.INFO, logger="medsynth.evaluation.utility_curve"):
        _run(cohort, resumed)
    assert (calls["train"], calls["score"]) == (TRAINED - 2, SCORED - 3)
    assert "resuming: 3 of 4 trainings already done" in caplog.text
    for table in ("utility.tsv", "draws.tsv"):
        assert (resumed / table).read_bytes() == (whole / table).read_bytes(), table
    assert not (resumed / WORK_DIR).exists()


def _touch(path: str | Path) -> None:
    """The file written again (its job rerun) with the same bytes: a later time."""
    st = Path(path).stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))


# What a rerun after a stop at the third training call does (three kept: (a), (b) at k = 1, the rule's model
# at k = 3): (trainings, scorings).
RESUMED, EVERYTHING = (TRAINED - 2, SCORED - 3), (TRAINED, SCORED)


@pytest.mark.parametrize("change, expected", [
    ("recipe", EVERYTHING), ("utility", EVERYTHING), ("real slices", EVERYTHING), ("synthetic samples", EVERYTHING),
    ("manifest", EVERYTHING), ("test slices", EVERYTHING), ("split", EVERYTHING), ("code", EVERYTHING),
    # The rule's model stands in for (a) at k = 3 alone: that point is scored again, nothing more trained.
    ("segmenter model", (TRAINED - 2, SCORED - 2)),
    # The resamples are drawn again from the kept confusions by every run.
    ("bootstrap", RESUMED)])
def test_a_kept_training_of_other_settings_inputs_or_code_is_trained_again(cohort, calls, tmp_path, monkeypatch,
                                                                           change, expected):
    out = tmp_path / "out"
    _stop_after(cohort, out, calls, trained=2)
    settings = _settings(cohort)
    if change == "recipe":
        settings = _settings(cohort, replace(SEG, lr=1e-3))
    elif change in ("utility", "bootstrap"):
        settings = _settings(cohort, **({"real_share": 0.75} if change == "utility" else {"bootstrap": 60}))
    elif change == "code":
        monkeypatch.setattr("medsynth.evaluation.utility_resume.code_digest", lambda: "other code")
    else:
        _touch({"real slices": cohort["train"][0], "test slices": cohort["test"][0], "split": cohort["split"],
                "manifest": cohort["manifest"], "segmenter model": cohort["segmenter"],
                "synthetic samples": samples_file(Path(cohort["cases_dir"]), Path(cohort["train"][0]).parent.name)}[change])
    _run(cohort, out, settings)
    assert (calls["train"], calls["score"]) == expected, change
    assert not (out / WORK_DIR).exists()


def test_an_unreadable_kept_training_is_trained_again(cohort, calls, tmp_path):
    out = tmp_path / "out"
    _stop_after(cohort, out, calls, trained=2)
    (out / WORK_DIR / "real-k1-draw1.pt").write_bytes(b"cut short")
    _run(cohort, out)
    assert (calls["train"], calls["score"]) == (RESUMED[0] + 1, RESUMED[1] + 1)


def test_a_kept_training_is_read_back_only_under_its_key(tmp_path):
    conf = torch.arange(18, dtype=torch.int64).reshape(2, 3, 3)
    store = Resumable(tmp_path / "work", [], {"utility": {"seed": 0}})
    what = {"arm": "real", "k": 1, "draw": 1}
    assert store.finished("a", what) is None
    store.close("a", what, conf)
    assert torch.equal(store.finished("a", what), conf)
    assert not list((tmp_path / "work").glob("*.part"))  # written to a temporary name, then renamed
    assert store.finished("a", {**what, "draw": 2}) is None and not store.path("a").exists()
