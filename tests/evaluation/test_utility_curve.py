"""The low-data utility curve: reproducible draws of patients, what each training sees, and two honesty
checks: a perfect generator helps at k = 1 with an interval above 0, noise does not."""

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from medsynth.data.labels import ORGAN_MEAN
from medsynth.data.slice_set import SliceSet
from medsynth.evaluation.utility_curve import (BOTH, REAL, SYNTHETIC, curve_ks, findings, organ_rows,
                                               patient_draws, plan_trainings, utility_curve)
from medsynth.evaluation.utility_data import TrainingPool
from medsynth.metrics.segmentation import SegmenterRecipe

NAMES = ("background", "body", "organ")
SEG = SegmenterRecipe(steps=150, batch_size=8, channels=(8, 16))
SETTINGS = {"real_patients": [1], "draws": 1, "bootstrap": 400, "seed": 0, "real_share": 0.5}


def test_draws_are_reproducible_distinct_and_keep_the_first_ones() -> None:
    patients = [f"p{i}" for i in range(6)]
    three = patient_draws(patients, 2, 3, seed=0)
    assert three == patient_draws(list(reversed(patients)), 2, 3, seed=0)  # the order given does not matter
    assert len(set(three)) == 3 and all(len(d) == 2 and list(d) == sorted(d) for d in three)
    assert patient_draws(patients, 2, 5, seed=0)[:3] == three  # more draws keep the first ones
    assert patient_draws(patients, 2, 3, seed=1) != three
    assert sorted(patient_draws(patients[:3], 2, 10, seed=0)) == [("p0", "p1"), ("p0", "p2"), ("p1", "p2")]
    assert patient_draws(patients, 6, 4, seed=0) == [tuple(patients)]  # one set of all of them


def test_the_curves_k_values_count_all_and_cap_at_the_cohort() -> None:
    assert curve_ks([1, 2, "all", 10], 4) == [1, 2, 4]
    assert curve_ks(["all"], 7) == [7]
    with pytest.raises(ValueError, match="no training patient"):
        curve_ks([1], 0)


def _pool(real_patients: list[str], synthetic_patients: list[str], per_case: int = 2) -> TrainingPool:
    """A pool of ``per_case`` slices per case: the real cases first, then the synthetic ones."""
    who = [p for p in real_patients + synthetic_patients for _ in range(per_case)]
    n = len(who)
    labels = torch.zeros(n, 8, 8, dtype=torch.uint8)
    labels[:, 2:6, 2:6] = 1
    labels[:, 3:5, 3:5] = 2
    data = SliceSet(torch.zeros(n, 1, 8, 8, dtype=torch.float16), labels, (labels > 0)[:, None], who, [0] * n)
    return TrainingPool(data, per_case * len(real_patients), np.array(who, dtype=object))


def test_each_training_sees_its_patients_real_slices_and_only_other_patients_synthetic_ones() -> None:
    pool = _pool(["a", "b", "c"], ["a", "b", "c", "x"])  # "x": a generate_from patient
    plan = {t.key: t for t in plan_trainings(pool, [1, 3], draws=2, seed=0, real_share=0.75)}
    assert sorted(plan) == sorted([(REAL, 1, 1), (REAL, 1, 2), (REAL, 3, 1), (BOTH, 1, 1), (BOTH, 1, 2),
                                   (BOTH, 3, 1), (SYNTHETIC, 0, 1)])
    is_real = np.arange(len(pool.patients)) < pool.real
    for (arm, k, draw), t in plan.items():
        if t.weights is None:
            continue
        w = t.weights.numpy()
        assert w.sum() == pytest.approx(1.0) and len(t.patients) == k
        seen = w > 0
        mine = np.isin(pool.patients, t.patients)
        if arm == REAL:
            assert (seen == (is_real & mine)).all() and t.real_slices == 2 * k and t.synthetic_slices == 0
        if arm == BOTH:
            assert (seen == ((is_real & mine) | (~is_real & ~mine))).all()
            assert w[is_real].sum() == pytest.approx(0.75)  # the real share, whatever the counts
            assert t.synthetic_slices == 2 * (4 - k)
        if arm == SYNTHETIC:
            assert (seen == ~is_real).all() and t.patients == ()
    # With all three patients only x's synthetic slices are another patient's.
    assert plan[(BOTH, 3, 1)].synthetic_slices == 2
    only_own = {t.key: t for t in plan_trainings(_pool(["a", "b"], ["a", "b"]), [2], 1, 0, 0.75)}
    assert only_own[(BOTH, 2, 1)].weights is None and "generate_from" in only_own[(BOTH, 2, 1)].note


def _patient(p: int, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n slices of patient p: an organ in a body, brighter than the body for even p and darker for odd p (two
    kinds of patient a segmenter must both see to find the organ), anywhere in the body."""
    labels = torch.zeros(n, 16, 16, dtype=torch.uint8)
    labels[:, 2:14, 2:14] = 1
    for i in range(n):
        y, x = (int(v) for v in torch.randint(3, 9, (2,), generator=g))
        labels[i, y:y + 4, x:x + 4] = 2
    sign = 1.0 if p % 2 == 0 else -1.0
    images = torch.where(labels == 2, 0.6 * sign, 0.0) + torch.where(labels == 0, -1.0, 0.0)
    return (images + 0.05 * torch.randn(n, 16, 16, generator=g))[:, None], labels


def _cohort(synthetic: str) -> tuple[TrainingPool, SliceSet, dict]:
    """Six training patients (real slices, then one synthetic case per patient: ``copies`` of its real images,
    what a perfect generator paints on its label maps, or ``noise``) and six test patients."""
    g = torch.Generator().manual_seed(0)
    train = [_patient(p, 6, g) for p in range(6)]
    test = [_patient(p, 4, g) for p in range(6)]
    fake = [x if synthetic == "copies" else torch.randn(x.shape, generator=g) for x, _ in train]
    images = torch.cat([x for x, _ in train] + fake).half()
    labels = torch.cat([y for _, y in train] * 2)
    who = [f"p{p}" for p in range(6) for _ in range(6)] * 2
    pool = TrainingPool(SliceSet(images, labels, (labels > 0)[:, None], who, [0] * len(who)), 36,
                        np.array(who, dtype=object))
    test_ids = [f"t{p}" for p in range(6) for _ in range(4)]
    test_set = SliceSet(torch.cat([x for x, _ in test]), torch.cat([y for _, y in test]),
                        torch.cat([(y > 0)[:, None] for _, y in test]), test_ids, [0] * len(test_ids))
    return pool, test_set, {c: c for c in test_ids}


def _organ(rows: list[dict], arm: str, k: int) -> dict:
    return next(r for r in rows if (r["arm"], r["real_patients"], r["class"]) == (arm, k, ORGAN_MEAN))


@pytest.mark.slow
def test_a_perfect_generator_helps_one_real_patient_with_an_interval_above_zero() -> None:
    pool, test, patients = _cohort("copies")
    rows, draws = utility_curve(pool, test, patients, NAMES, SEG, SETTINGS)
    a, b = _organ(rows, REAL, 1), _organ(rows, BOTH, 1)
    assert b["dice"] >= a["dice"] and b["delta"] > 0 and b["delta_ci_low"] > 0, (a, b)
    assert b["delta"] == pytest.approx(b["dice"] - a["dice"])
    assert b["synthetic_slices"] == 30 and b["real_slices"] == 6 and b["real_share"] == 0.5
    assert "over 6 test patients (6 cases)" in b["note"]
    assert [(d["arm"], d["real_patients"]) for d in draws] == [(REAL, 1), (BOTH, 1), (SYNTHETIC, 0)]
    assert draws[0]["patients"] == draws[1]["patients"] and draws[0]["organ_dice"] == pytest.approx(a["dice"])
    # Synthetic only: copies of every training patient, the whole real cohort in all but name.
    assert _organ(rows, SYNTHETIC, 0)["dice"] > a["dice"]
    assert findings(rows)[0].startswith("With 1 real training patient, adding synthetic images of other patients' "
                                        "label maps (30 slices, 50% of each batch) changed the organ-mean Dice by "
                                        f"{b['delta']:+.3f} (95 % interval {b['delta_ci_low']:+.3f} to ")


@pytest.mark.slow
def test_noise_as_synthetic_images_does_not_help() -> None:
    pool, test, patients = _cohort("noise")
    rows, _ = utility_curve(pool, test, patients, NAMES, SEG, SETTINGS)
    b = _organ(rows, BOTH, 1)
    assert not b["delta_ci_low"] > 0, b
    assert _organ(rows, SYNTHETIC, 0)["dice"] < _organ(rows, REAL, 1)["dice"]


def test_a_point_that_cannot_run_is_na_with_its_reason_and_the_summary_skips_it() -> None:
    pool, test, patients = _cohort("copies")
    pool = TrainingPool(pool.data, pool.real, np.array([f"p{i // 6 % 6}" for i in range(72)], dtype=object))
    seg = replace(SEG, steps=2)
    rows, draws = utility_curve(pool, test, patients, NAMES, seg, {**SETTINGS, "real_patients": ["all"]})
    b = _organ(rows, BOTH, 6)
    assert b.get("dice") is None and b["note"].startswith("not run: every synthetic case is of one of these 6")
    assert len([r for r in rows if r["arm"] == BOTH]) == len(NAMES) + 1
    assert [d["organ_dice"] for d in draws if d["arm"] == BOTH] == [None]
    assert [r["arm"] for r in organ_rows(rows)] == [REAL, BOTH, SYNTHETIC]
    assert len(findings(rows)) == 2 and findings(rows)[0].startswith("Synthetic images alone")
    assert findings(rows)[1] == "Intervals: 95 % bootstrap interval over 6 test patients (6 cases)."
    assert not math.isnan(_organ(rows, REAL, 6)["dice"])


def test_copies_of_every_real_slice_train_the_model_real_slices_train() -> None:
    """A perfect generator: synthetic = each training patient's own real slices. Synthetic only (c) then
    draws the very slices (a) draws with every patient, and scores exactly as it does."""
    pool, test, patients = _cohort("copies")
    seg = replace(SEG, steps=20)
    rows, _ = utility_curve(pool, test, patients, NAMES, seg, {**SETTINGS, "real_patients": ["all"]})
    for cls in (*NAMES, ORGAN_MEAN):
        a = next(r for r in rows if (r["arm"], r["class"]) == (REAL, cls))
        c = next(r for r in rows if (r["arm"], r["class"]) == (SYNTHETIC, cls))
        assert (a["dice"], a["ci_low"], a["ci_high"]) == (c["dice"], c["ci_low"], c["ci_high"]), cls


def test_the_segmenter_rules_model_stands_in_only_for_every_real_patient(monkeypatch) -> None:
    from medsynth.evaluation import utility_curve as uc

    pool, _, _ = _cohort("copies")
    sentinel = torch.nn.Identity()
    scored = {}

    def score(models, test, unit, units, num_classes):
        scored.update(models)
        return {key: torch.zeros(units, num_classes, num_classes, dtype=torch.int64) for key in models}

    monkeypatch.setattr(uc, "score_confusions", score)
    seg = replace(SEG, steps=1)
    for ks, used in (([1, 2], False), ([1, 6], True)):
        scored.clear()
        plan = plan_trainings(pool, ks, 1, 0, 0.5)
        uc.score_all(plan, pool, None, np.zeros(0, np.int64), 1, len(NAMES), seg, None, reuse=sentinel)
        assert [key for key, m in scored.items() if m is sentinel] == ([(REAL, 6, 1)] if used else []), ks


def test_the_stage_reads_its_files_and_reuses_the_segmenter_only_in_the_experiments_classes(tmp_path) -> None:
    """``utility_experiment`` on the files the rule gives it: (a) with every patient is the segmenter rule's
    model when it names the experiment's classes in their order, and is trained here otherwise."""
    from memory_cohort import write_cohort

    from medsynth.evaluation.stages import UtilityInputs, UtilitySettings, utility_experiment
    from medsynth.evaluation.utility import bootstrap_units, score_confusions
    from medsynth.evaluation.utility_data import TestCases
    from medsynth.models.segmenter import load_segmenter, save_segmenter

    c = write_cohort(tmp_path / "cohort", test_cases=5, train_cases=3, slices=4, size=16)
    inputs = UtilityInputs(real_model=Path(c["segmenter"]), real_train=c["train"], label_train=c["train"],
                           manifest=Path(c["manifest"]), cases_dir=Path(c["cases_dir"]), test=c["test"],
                           split=Path(c["split"]))
    seg = SegmenterRecipe(steps=40, batch_size=4, channels=(4, 8))  # trained: apart from the rule's untrained model
    settings = UtilitySettings(names=c["names"], image_names=c["names"], source="the image dataset x", segmenter=seg,
                               utility={**SETTINGS, "real_patients": [1, "all"], "bootstrap": 100})
    rows, draws = utility_experiment(inputs, settings, torch.device("cpu"))
    assert [(d["arm"], d["real_patients"]) for d in draws] == [(REAL, 1), (BOTH, 1), (REAL, 3), (BOTH, 3),
                                                                (SYNTHETIC, 0)]
    assert draws[1]["synthetic_slices"] == 2 * 2 * 4  # two other patients, two samples of four slices
    # The rule's model scored by itself: what (a) with every patient reads when it is reused.
    model, _ = load_segmenter(Path(c["segmenter"]), torch.device("cpu"))
    test = TestCases(c["test"], c["names"], c["names"], "x")
    unit, units, _ = bootstrap_units(test.case_ids, {f"test{i:03d}": f"p_test{i:03d}" for i in range(5)})
    own = score_confusions({"m": model}, test, unit, units, len(c["names"]))["m"].sum(0)
    reused = next(r for r in rows if (r["arm"], r["real_patients"], r["class"]) == (REAL, 3, "liver"))
    assert reused["dice"] == pytest.approx(float(2 * own[1, 1] / (own[1].sum() + own[:, 1].sum())))
    # The same weights under another class order: retrained in the experiment's classes, so (a) differs.
    other = save_segmenter(model, tmp_path / "other.pt", len(c["names"]), (4, 8),
                           [c["names"][0], *reversed(c["names"][1:])])
    other_rows, _ = utility_experiment(UtilityInputs(**{**inputs.__dict__, "real_model": other}), settings,
                                       torch.device("cpu"))
    retrained = next(r for r in other_rows if (r["arm"], r["real_patients"], r["class"]) == (REAL, 3, "liver"))
    assert retrained["dice"] > reused["dice"] + 0.2, (retrained["dice"], reused["dice"])


def test_several_draws_average_and_report_their_spread() -> None:
    """Two draws of one patient each: the point is their mean, the spread their lowest and highest, and
    (b) - (a) is paired draw by draw."""
    pool, test, patients = _cohort("copies")
    rows, draws = utility_curve(pool, test, patients, NAMES, replace(SEG, steps=30),
                                {**SETTINGS, "draws": 2})
    by_draw = {(d["arm"], d["draw"]): d["organ_dice"] for d in draws}
    a, b = _organ(rows, REAL, 1), _organ(rows, BOTH, 1)
    assert a["draws"] == b["draws"] == 2 and draws[0]["patients"] != draws[2]["patients"]
    assert a["dice"] == pytest.approx((by_draw[(REAL, 1)] + by_draw[(REAL, 2)]) / 2)
    assert (a["draw_dice_min"], a["draw_dice_max"]) == (min(by_draw[(REAL, 1)], by_draw[(REAL, 2)]),
                                                        max(by_draw[(REAL, 1)], by_draw[(REAL, 2)]))
    deltas = sorted(by_draw[(BOTH, d)] - by_draw[(REAL, d)] for d in (1, 2))
    assert (b["draw_delta_min"], b["draw_delta_max"]) == pytest.approx(deltas)
    assert b["delta"] == pytest.approx(sum(deltas) / 2) and a["draw_delta_min"] is None
    assert f"(each draw: {deltas[0]:+.3f} to {deltas[1]:+.3f})." in findings(rows)[0]
    assert findings(rows)[-1].endswith(", and over the draws of patients where a point has several.")


def test_with_several_draws_the_interval_resamples_the_draws_too() -> None:
    """Two draws of one patient, one scoring 1.0 and one 0.667 on every one of 10 test patients: the test
    patients alone would give the interval [0.833, 0.833], as if the patient one has did not matter. The
    two-level bootstrap spans the two draws; one draw keeps the test patients' interval."""
    from medsynth.evaluation.utility_curve import HeldOut, Training, curve_rows, draw_picks

    good, half = torch.zeros(10, 3, 3, dtype=torch.int64), torch.zeros(10, 3, 3, dtype=torch.int64)
    good[:, 0, 0] = half[:, 0, 0] = 50
    good[:, 2, 2] = 10
    half[:, 2, 2], half[:, 2, 0] = 5, 5  # organ Dice 2 * 5 / (10 + 5)
    plan = [Training(REAL, 1, d, (f"p{d}",), None, 8, 0, 1.0) for d in (1, 2)]
    held = HeldOut(10, 10, "95 % bootstrap interval over 10 test patients (10 cases)")
    rows, _ = curve_rows(plan, {(REAL, 1, 1): good, (REAL, 1, 2): half}, NAMES, held, 400, 0)
    a = _organ(rows, REAL, 1)
    assert a["dice"] == pytest.approx((1 + 2 / 3) / 2)
    assert a["ci_low"] == pytest.approx(2 / 3) and a["ci_high"] == pytest.approx(1.0)
    assert "resamples its 2 draws of patients too" in a["note"]
    one, _ = curve_rows(plan[:1], {(REAL, 1, 1): good}, NAMES, held, 400, 0)
    assert _organ(one, REAL, 1)["ci_low"] == _organ(one, REAL, 1)["ci_high"] == 1.0
    # Reproducible, with replacement, and the same for (a) and (b) at one k.
    picks = draw_picks(3, 1000, 0, 1)
    assert np.array_equal(picks, draw_picks(3, 1000, 0, 1)) and not np.array_equal(picks, draw_picks(3, 1000, 0, 2))
    assert set(np.unique(picks)) == {0, 1, 2} and (picks[:, 0] == picks[:, 1]).mean() == pytest.approx(1 / 3, abs=0.05)
    assert np.array_equal(draw_picks(1, 5, 0, 1), np.zeros((5, 1)))


def test_a_class_no_test_slice_shows_is_scored_for_no_arm() -> None:
    """Spleen is in training but in no test slice: a model marking a few pixels of it would score 0 there
    and one marking none NaN, so the arms' organ means would cover different classes. Neither is scored."""
    from medsynth.evaluation.utility_curve import HeldOut, Training, curve_rows

    names = ("background", "liver", "spleen")
    clean, stray = torch.zeros(6, 3, 3, dtype=torch.int64), torch.zeros(6, 3, 3, dtype=torch.int64)
    clean[:, 0, 0] = stray[:, 0, 0] = 100
    clean[:, 1, 1] = stray[:, 1, 1] = 8
    clean[:, 1, 0] = stray[:, 1, 0] = 2  # liver Dice 16 / 18 for both
    stray[:, 0, 0], stray[:, 0, 2] = 97, 3  # three background pixels called spleen
    plan = [Training(REAL, 1, 1, ("p0",), None, 8, 0, 1.0), Training(SYNTHETIC, 0, 1, (), None, 0, 8, 0.0)]
    held = HeldOut(6, 6, "95 % bootstrap interval over 6 test patients (6 cases)")
    rows, _ = curve_rows(plan, {(REAL, 1, 1): clean, (SYNTHETIC, 0, 1): stray}, names, held, 200, 0)
    for arm, k in ((REAL, 1), (SYNTHETIC, 0)):
        spleen = next(r for r in rows if (r["arm"], r["real_patients"], r["class"]) == (arm, k, "spleen"))
        assert math.isnan(spleen["dice"]) and spleen["note"].endswith("no test slice shows spleen: not scored")
        organ = _organ(rows, arm, k)
        assert organ["dice"] == pytest.approx(16 / 18) and organ["note"].endswith("organ mean over liver "
                                                                               "(background and body left out)")


def test_one_test_slice_and_one_draw_give_no_interval_not_the_point_as_one() -> None:
    """A test split of one slice: every bootstrap resample is that slice, so the '95 % interval' was the point
    itself ('+0.068 to +0.068' in the card: a certain gain from one slice). NA, noted; the sentences say so."""
    from medsynth.evaluation.utility import bootstrap_units
    from medsynth.evaluation.utility_curve import HeldOut, Training, curve_rows

    good, half = torch.zeros(1, 3, 3, dtype=torch.int64), torch.zeros(1, 3, 3, dtype=torch.int64)
    good[:, 0, 0] = half[:, 0, 0] = 50
    good[:, 2, 2] = 10
    half[:, 2, 2], half[:, 2, 0] = 5, 5
    _, units, note = bootstrap_units(["c0"], {"c0": "p0"})
    assert units == 1 and "NA for a point with one draw" in note
    plan = [Training(REAL, 1, 1, ("p1",), None, 8, 0, 1.0), Training(BOTH, 1, 1, ("p1",), None, 8, 8, 0.5),
            Training(SYNTHETIC, 0, 1, (), None, 0, 8, 0.0)]
    rows, _ = curve_rows(plan, {(REAL, 1, 1): half, (BOTH, 1, 1): good, (SYNTHETIC, 0, 1): good}, NAMES,
                         HeldOut(1, 1, note), 200, 0)
    for arm, k in ((REAL, 1), (BOTH, 1), (SYNTHETIC, 0)):
        organ = _organ(rows, arm, k)
        assert not math.isnan(organ["dice"]) and math.isnan(organ["ci_low"]) and math.isnan(organ["ci_high"])
    both = _organ(rows, BOTH, 1)
    assert both["delta"] == pytest.approx(1 / 3) and math.isnan(both["delta_ci_low"]) and math.isnan(both["delta_ci_high"])
    text = " ".join(findings(rows))
    assert "nan" not in text and "95 % interval" not in text and "no interval" in text
    # Several test slices keep their (noted, too narrow) interval.
    rows, _ = curve_rows(plan[:1], {(REAL, 1, 1): half.repeat(3, 1, 1)}, NAMES, HeldOut(1, 1, note), 200, 0)
    assert not math.isnan(_organ(rows, REAL, 1)["ci_low"])
