"""Does synthetic data help when labelled images are scarce? The low-data utility curve.

For k real labelled training patients (``utility.real_patients``, each k in
``utility.draws`` reproducible draws) the project's segmenter is trained on

- (a) ``real``: the real slices of those k patients;
- (b) ``real+synthetic``: the same, and synthetic slices of the label maps they
  do not cover (every other patient's: the other training patients' and the
  generate_from cohorts'), a share ``1 - real_share`` of every batch;
- (c) ``synthetic``: every synthetic slice and no real one (one model: it does
  not depend on k).

Every training has the same U-Net, steps, batch, schedule and seed (the metrics'
segmenter settings); each is scored on the real test split. A point's interval
is a two-level bootstrap: each resample draws the test patients and, with
several draws of k patients, the draws (which k patients one happens to have
matters most when k is small). (b) - (a) is paired: the same draws of
patients, the same resamples. (a) with every patient is the ``segmenter``
rule's model when it knows the experiment's classes (same data, same budget).
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch
from tqdm import tqdm

from medsynth.data.labels import ORGAN_MEAN, organ_ids, organ_note
from medsynth.evaluation.utility import bootstrap_draws, bootstrap_units, interval, score_confusions
from medsynth.evaluation.utility_data import TestCases, TrainingPool
from medsynth.evaluation.utility_resume import Straight, weights_digest
from medsynth.data.slice_set import SliceSet
from medsynth.io.tables import parse_float
from medsynth.metrics.segmentation import SegmenterRecipe, train_segmenter

REAL, BOTH, SYNTHETIC = "real", "real+synthetic", "synthetic"
ARMS = (REAL, BOTH, SYNTHETIC)
COLUMNS = ["arm", "real_patients", "class", "dice", "ci_low", "ci_high", "delta", "delta_ci_low", "delta_ci_high",
           "draws", "draw_dice_min", "draw_dice_max", "draw_delta_min", "draw_delta_max", "real_slices",
           "synthetic_slices", "real_share", "test_cases", "test_patients", "note"]
DRAW_COLUMNS = ["arm", "real_patients", "draw", "patients", "real_slices", "synthetic_slices", "real_share",
                "organ_dice", "note"]
ALL = "all"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Training:
    """One segmenter of the curve: its arm, k real patients (0 for synthetic only), its draw and patients,
    and the weights that pick its slices from the pool (None: not trained, ``note`` says why)."""
    arm: str
    k: int
    draw: int
    patients: tuple[str, ...]
    weights: torch.Tensor | None
    real_slices: int
    synthetic_slices: int
    real_share: float
    note: str = ""

    @property
    def key(self) -> tuple[str, int, int]:
        return self.arm, self.k, self.draw


def curve_ks(asked: Sequence[int | str], n: int) -> list[int]:
    """The curve's k values for ``n`` real training patients: ``all`` is n, and a k above n is n too."""
    if n < 1:
        raise ValueError("utility: the image dataset has no training patient; the curve needs at least one")
    return sorted({n if k == ALL else min(int(k), n) for k in asked})


def patient_draws(patients: Sequence[str], k: int, draws: int, seed: int) -> list[tuple[str, ...]]:
    """``draws`` different sets of k of ``patients`` (fewer when fewer exist), each sorted. Reproducible:
    seeded by ``seed`` and k alone, so asking more draws keeps the first ones and other k change nothing."""
    pool = sorted(set(patients))
    want = min(draws, math.comb(len(pool), k))
    g = np.random.default_rng([seed, k])
    chosen: list[tuple[str, ...]] = []
    while len(chosen) < want:
        pick = tuple(sorted(str(p) for p in g.choice(pool, k, replace=False)))
        if pick not in chosen:
            chosen.append(pick)
    return chosen


def _uniform(selected: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(selected / selected.sum())


def plan_trainings(pool: TrainingPool, ks: Sequence[int], draws: int, seed: int,
                   real_share: float) -> list[Training]:
    """Every training of the curve: per k and draw (a) and (b), then (c) once."""
    is_real = np.arange(len(pool.patients)) < pool.real
    patients = sorted(set(pool.patients[:pool.real]))
    plan = []
    for k in ks:
        for draw, chosen in enumerate(patient_draws(patients, k, 1 if k == len(patients) else draws, seed), 1):
            mine = np.isin(pool.patients, chosen)
            real, other = is_real & mine, ~is_real & ~mine
            plan.append(Training(REAL, k, draw, chosen, _uniform(real), int(real.sum()), 0, 1.0))
            if not other.any():
                why = (f"not run: every synthetic case is of one of these {k} patients, so there are no label maps "
                       "they do not cover (add a label-only cohort: experiments.<name>.generate_from)")
                plan.append(Training(BOTH, k, draw, chosen, None, int(real.sum()), 0, real_share, why))
                continue
            weights = real * real_share / real.sum() + other * (1 - real_share) / other.sum()
            plan.append(Training(BOTH, k, draw, chosen, torch.from_numpy(weights), int(real.sum()), int(other.sum()),
                                 real_share))
    synthetic = ~is_real
    plan.append(Training(SYNTHETIC, 0, 1, (), _uniform(synthetic), 0, int(synthetic.sum()), 0.0))
    return plan


def training_identity(t: Training, reused: bool) -> dict:
    """What makes a training's confusions, as a resume key holds it (``utility_resume``): its place in the
    curve, its patients and the slices it draws (its weights over the pool, bit for bit); ``reused``: the
    segmenter rule's model stands in for it."""
    return {"arm": t.arm, "k": t.k, "draw": t.draw, "patients": list(t.patients), "real_share": t.real_share,
            "weights": weights_digest(t.weights), "reused": reused}


def score_all(plan: Sequence[Training], pool: TrainingPool, test: SliceSet | TestCases, unit: np.ndarray, units: int,
              num_classes: int, recipe: SegmenterRecipe, device: torch.device | None,
              reuse: torch.nn.Module | None = None, store: Straight | None = None) -> dict[tuple, torch.Tensor]:
    """The (units, C, C) test confusions (``score_confusions``) of every training of ``plan`` with weights, by
    key, each trained by ``recipe``. ``reuse``: the model of (a) with every real training patient, trained by
    this recipe already (the segmenter rule's), used for that point. Each training is scored as soon as it
    is trained and handed to ``store``, which keeps it for a rerun of a stopped job; one ``store`` has
    kept already is taken as it is (confusions are integer counts: the same whether scored alone or
    beside other models)."""
    store = store or Straight()
    everyone = len(set(pool.patients[:pool.real]))
    runs = [(t, training_identity(t, reuse is not None and t.arm == REAL and t.k == everyone))
            for t in plan if t.weights is not None]
    kept = {t.key: store.finished(entry_name(t), what) for t, what in runs}
    done = sum(c is not None for c in kept.values())
    if done:
        log.info("resuming: %d of %d trainings already done", done, len(runs))
    with tqdm(total=len(runs), initial=done, desc="utility", unit="segmenter") as bar:
        for t, what in runs:
            if kept[t.key] is not None:
                continue
            model = reuse if what["reused"] else train_segmenter(pool.data.images, pool.data.labels, num_classes,
                                                                  recipe, device, t.weights)
            kept[t.key] = score_confusions({t.key: model}, test, unit, units, num_classes)[t.key]
            store.close(entry_name(t), what, kept[t.key])
            bar.update()
    return kept


def entry_name(t: Training) -> str:
    """A training's file in the work folder: its arm, k and draw."""
    return f"{t.arm}-k{t.k}-draw{t.draw}"


@dataclass(frozen=True)
class Scored:
    """Dice of one training on the test split (``bootstrap_draws``: all units, then every resample)."""
    point: np.ndarray
    draws: np.ndarray


def draw_picks(n_draws: int, n_boot: int, seed: int, k: int) -> np.ndarray:
    """(n_boot, n_draws): the draws of patients each bootstrap resample averages, picked with replacement,
    the bootstrap's second level (which k patients a user happens to have). Seeded by seed, k and the
    number of draws, so (a) and (b) at one k pick alike. One draw picks itself: the interval is then the
    test patients' alone."""
    if n_draws == 1:
        return np.zeros((n_boot, 1), dtype=np.int64)
    return np.random.default_rng([seed, k, n_draws]).integers(0, n_draws, (n_boot, n_draws))


def _mean(scored: Sequence[Scored], picks: np.ndarray) -> Scored:
    """The mean over draws of patients; its resample i averages the draws ``picks[i]`` names, each at its
    test resample i (the same test patients for every draw: paired)."""
    stack = np.stack([s.draws for s in scored])  # (draws, n_boot, C + 1)
    resampled = stack[picks, np.arange(picks.shape[0])[:, None]]  # (n_boot, picked draws, C + 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a class no test slice shows stays NaN, said as such
        return Scored(np.nanmean([s.point for s in scored], 0), np.nanmean(resampled, 1))


def _spread(name: str, values: np.ndarray) -> dict:
    """The lowest and highest of one value over the draws of patients (NaN for a class no test slice shows)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return {f"{name}_min": float(np.nanmin(values)), f"{name}_max": float(np.nanmax(values))}


@dataclass(frozen=True)
class HeldOut:
    """The real test split as the rows describe it: how many cases and patients, and the interval's unit."""
    cases: int
    patients: int
    note: str


def _point_rows(arm: str, k: int, runs: Sequence[Training], scored: Mapping[tuple, Scored],
                names: Sequence[str], test: HeldOut, organ_text: str, seed: int, units: int = 2) -> list[dict]:
    """The rows of one point of the curve: each class and the organ mean, averaged over its draws (the
    intervals resampling the draws too: ``draw_picks``); (b) with its paired difference to (a) of the same
    draws. ``units``: the test units the bootstrap resamples (below 2 with one draw: NA intervals)."""
    done = [t for t in runs if t.key in scored]
    base = {**dict.fromkeys(COLUMNS), "arm": arm, "real_patients": k, "draws": len(done),
            "real_share": runs[0].real_share,
            "test_cases": test.cases, "test_patients": test.patients,
            "real_slices": round(np.mean([t.real_slices for t in runs])),
            "synthetic_slices": round(np.mean([t.synthetic_slices for t in runs]))}
    missed = [t for t in runs if t.key not in scored]
    if not done:
        return [{**base, "class": c, "note": missed[0].note} for c in [*names, ORGAN_MEAN]]
    skipped = "" if not missed else f"draw(s) {', '.join(str(t.draw) for t in missed)} {missed[0].note}"
    picks = draw_picks(len(done), len(scored[done[0].key].draws), seed, k)
    mean = _mean([scored[t.key] for t in done], picks)
    lo, hi = interval(mean.draws)
    # One test slice and one draw: every resample is the point itself, which is no interval.
    degenerate = units < 2 and len(done) < 2
    if degenerate:
        lo = hi = np.full_like(mean.point, math.nan)
    per_draw = np.array([scored[t.key].point for t in done])  # the spread the intervals (over patients) leave out
    delta = per_delta = None
    if arm == BOTH:
        pairs = [(scored[t.key], scored[(REAL, t.k, t.draw)]) for t in done]
        delta = _mean([Scored(b.point - a.point, b.draws - a.draws) for b, a in pairs], picks)
        delta_lo, delta_hi = (lo, hi) if degenerate else interval(delta.draws)
        per_delta = np.array([b.point - a.point for b, a in pairs])
    resampled = f"the interval resamples its {len(done)} draws of patients too" if len(done) > 1 else ""
    note = "; ".join(n for n in (test.note, resampled, skipped) if n)
    rows = []
    for i, cls in enumerate([*names, ORGAN_MEAN]):
        row = {**base, "class": cls, "dice": float(mean.point[i]), "ci_low": float(lo[i]), "ci_high": float(hi[i]),
               **_spread("draw_dice", per_draw[:, i]), "note": _class_note(cls, mean.point[i], note, organ_text)}
        if delta is not None:
            row.update(delta=float(delta.point[i]), delta_ci_low=float(delta_lo[i]), delta_ci_high=float(delta_hi[i]),
                       **_spread("draw_delta", per_delta[:, i]))
        rows.append(row)
    return rows


def _class_note(cls: str, dice: float, note: str, organ_text: str) -> str:
    if cls == ORGAN_MEAN:
        return f"{note}; {organ_text}"
    return f"{note}; no test slice shows {cls}: not scored" if math.isnan(dice) else note


def curve_rows(plan: Sequence[Training], confusions: Mapping[tuple, torch.Tensor], names: Sequence[str],
               test: HeldOut, n_boot: int, seed: int) -> tuple[list[dict], list[dict]]:
    """``COLUMNS`` rows (per arm and k, each class and the organ mean) and ``DRAW_COLUMNS`` rows (per
    training: its patients and organ-mean Dice) of the trained ``plan``'s test ``confusions``."""
    organs = organ_ids(names)
    scored = {key: Scored(*bootstrap_draws(conf, n_boot, seed, organs)) for key, conf in confusions.items()}
    units = min((len(conf) for conf in confusions.values()), default=0)
    present = [names[i] for i in organs if any(not math.isnan(s.point[i]) for s in scored.values())]
    rows = []
    for arm in ARMS:
        for k in sorted({t.k for t in plan if t.arm == arm}):
            runs = [t for t in plan if (t.arm, t.k) == (arm, k)]
            rows += _point_rows(arm, k, runs, scored, names, test, organ_note(present), seed, units)
    draws = [{"arm": t.arm, "real_patients": t.k, "draw": t.draw, "patients": " ".join(t.patients),
              "real_slices": t.real_slices, "synthetic_slices": t.synthetic_slices, "real_share": t.real_share,
              "organ_dice": float(scored[t.key].point[-1]) if t.key in scored else None, "note": t.note}
             for t in plan]
    return rows, draws


def utility_curve(pool: TrainingPool, test: SliceSet | TestCases, test_patients: Mapping[str, str],
                  names: Sequence[str], recipe: SegmenterRecipe, settings: Mapping, device: torch.device | None = None,
                  reuse: torch.nn.Module | None = None, store: Straight | None = None) -> tuple[list[dict], list[dict]]:
    """The curve's two tables (``curve_rows``) for the training ``pool`` and the real ``test`` split
    (``test_patients``: its case id -> patient, the bootstrap's unit); ``settings``: the utility section
    (``real_patients``, ``draws``, ``bootstrap``, ``seed``, ``real_share``); ``reuse`` and ``store`` (the
    trainings a stopped run kept: ``utility_resume``) as in ``score_all``."""
    n = len(set(pool.patients[:pool.real]))
    ks = curve_ks(settings["real_patients"], n)
    plan = plan_trainings(pool, ks, settings["draws"], settings["seed"], settings["real_share"])
    unit, units, note = bootstrap_units(test.case_ids, test_patients)
    confusions = score_all(plan, pool, test, unit, units, len(names), recipe, device, reuse, store)
    counts = HeldOut(len(set(test.case_ids)), len({test_patients[c] for c in test.case_ids}), note)
    return curve_rows(plan, confusions, names, counts, settings["bootstrap"], settings["seed"])


SUMMARY_COLUMNS = ["arm", "real_patients", "dice", "ci_low", "ci_high", "delta", "delta_ci_low", "delta_ci_high",
                   "draws", "real_slices", "synthetic_slices"]


def organ_rows(rows: Sequence[Mapping]) -> list[dict]:
    """The organ-mean rows of ``utility.tsv`` with ``SUMMARY_COLUMNS``: the curve as a short table."""
    return [{c: r.get(c) for c in SUMMARY_COLUMNS} for r in rows if r["class"] == ORGAN_MEAN]


def _interval(row: Mapping, prefix: str, spec: str) -> str:
    """A row's 95 % interval (``<prefix>_low``, ``<prefix>_high``) in words; NA with a pointer to the reason."""
    lo, hi = parse_float(row.get(f"{prefix}_low")), parse_float(row.get(f"{prefix}_high"))
    if math.isnan(lo) or math.isnan(hi):
        return "no interval: see the note in utility.tsv"
    return f"95 % interval {lo:{spec}} to {hi:{spec}}"


def findings(rows: Sequence[Mapping]) -> list[str]:
    """The curve in sentences (the model card's and the summary's): per k where (b) ran, what adding the
    synthetic images changed; and synthetic images alone against every real patient."""
    organ = {(r["arm"], int(r["real_patients"])): r for r in rows if r["class"] == ORGAN_MEAN}
    out = []
    for (arm, k), r in sorted(organ.items(), key=lambda item: item[0][1]):
        if arm != BOTH or math.isnan(parse_float(r.get("dice"))):
            continue
        a, draws = organ[(REAL, k)], int(r["draws"])
        out.append(f"With {k} real training patient{'s' if k > 1 else ''}, adding synthetic images of other patients' "
                   f"label maps ({r['synthetic_slices']} slices, {1 - parse_float(r['real_share']):.0%} of each batch) changed "
                   f"the organ-mean Dice by {parse_float(r['delta']):+.3f} ({_interval(r, 'delta_ci', '+.3f')}): "
                   f"{parse_float(a['dice']):.3f} to {parse_float(r['dice']):.3f}, "
                   f"{draws} draw{'s' if draws > 1 else ''} of patients"
                   + (f" (each draw: {parse_float(r['draw_delta_min']):+.3f} to {parse_float(r['draw_delta_max']):+.3f})."
                      if draws > 1 else "."))
    real_ks = [k for arm, k in organ if arm == REAL]
    synthetic = organ.get((SYNTHETIC, 0))
    if real_ks and synthetic and not math.isnan(parse_float(synthetic.get("dice"))):
        a = organ[(REAL, max(real_ks))]
        out.append(f"Synthetic images alone ({synthetic['synthetic_slices']} slices): organ-mean Dice "
                   f"{parse_float(synthetic['dice']):.3f} ({_interval(synthetic, 'ci', '.3f')}), against "
                   f"{parse_float(a['dice']):.3f} with all {max(real_ks)} real training patients.")
    if not out:
        return ["No point of the curve could be scored (see utility.tsv's notes)."]
    # What the intervals resample: test patients, or (few of them) slices, which makes them too narrow; and
    # the draws of patients where a point has several.
    unit = next((str(r["note"]).split(";")[0] for r in organ.values() if not math.isnan(parse_float(r.get("dice")))), "")
    several = any(parse_float(r.get("draws")) > 1 for r in organ.values())
    return out + [f"Intervals: {unit}" + (", and over the draws of patients where a point has several." if several
                                          else ".")] if unit else out
