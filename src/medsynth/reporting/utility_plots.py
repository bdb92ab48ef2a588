"""The utility curve as a figure: organ-mean Dice against the number of real training patients, real only
vs real + synthetic vs synthetic only, with 95 % intervals as bands; beside it the paired difference."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from medsynth.data.labels import ORGAN_MEAN
from medsynth.evaluation.utility_curve import BOTH, REAL, SYNTHETIC
from medsynth.io.figures import plt, save_figure
from medsynth.io.tables import parse_float

STYLE = {REAL: ("tab:gray", "o", "(a) k real patients"), BOTH: ("tab:blue", "s", "(b) k real + synthetic"),
         SYNTHETIC: ("tab:orange", None, "(c) synthetic only")}


def _series(rows: Sequence[Mapping], arm: str, columns: Sequence[str] = ("dice", "ci_low", "ci_high")
            ) -> tuple[np.ndarray, ...]:
    """k and the ``columns`` (a value and its interval) of one arm's organ-mean rows, by k (NaN where a point
    was not run)."""
    mine = sorted((int(r["real_patients"]), r) for r in rows if r["arm"] == arm and r["class"] == ORGAN_MEAN)
    k = np.array([k for k, _ in mine], dtype=float)
    return k, *(np.array([parse_float(r[c]) for _, r in mine]) for c in columns)


def _with_interval(ax, x: np.ndarray, d: np.ndarray, lo: np.ndarray, hi: np.ndarray, color: str, **line) -> None:
    """Values and their intervals, as a band and as error bars: a point without neighbours (the others not
    run) shows its interval too."""
    ax.fill_between(x, lo, hi, color=color, alpha=0.2, lw=0)
    ax.errorbar(x, d, yerr=np.nan_to_num(np.vstack([d - lo, hi - d]).clip(min=0)), color=color, capsize=3, **line)


def _dice_panel(ax, rows: Sequence[Mapping], draws: Sequence[Mapping], x_of: Mapping[int, int]) -> None:
    for arm in (REAL, BOTH):
        color, marker, label = STYLE[arm]
        k, d, lo, hi = _series(rows, arm)
        _with_interval(ax, np.array([x_of[int(v)] for v in k], dtype=float), d, lo, hi, color, marker=marker,
                       label=label)
        side = -0.08 if arm == REAL else 0.08  # beside the point and its error bar, (a) left and (b) right
        dots = [(x_of[int(r["real_patients"])] + side, parse_float(r["organ_dice"])) for r in draws if r["arm"] == arm]
        if len(dots) > len(k):  # several draws per point: each draw's own score
            ax.scatter(*zip(*dots), color=color, s=10, alpha=0.6, zorder=3)
    _, d, lo, hi = _series(rows, SYNTHETIC)
    if len(d) and not math.isnan(d[0]):
        color, _, label = STYLE[SYNTHETIC]
        ax.axhspan(lo[0], hi[0], color=color, alpha=0.15, lw=0)
        ax.axhline(d[0], color=color, ls="--", label=f"{label}: {d[0]:.3f}")
    ax.set_ylabel("organ-mean Dice, real test split", fontsize=8)
    handles, labels = ax.get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda i: labels[i])  # (a), (b), (c)
    ax.legend([handles[i] for i in order], [labels[i] for i in order], fontsize=7, loc="lower right")


def _delta_panel(ax, rows: Sequence[Mapping], x_of: Mapping[int, int]) -> None:
    k, d, lo, hi = _series(rows, BOTH, ("delta", "delta_ci_low", "delta_ci_high"))
    x = np.array([x_of[int(v)] for v in k], dtype=float)
    ax.axhline(0, color="black", lw=0.8)
    _with_interval(ax, x, d, lo, hi, STYLE[BOTH][0], marker="s")
    for xi, di in zip(x, d):
        if math.isnan(di):
            ax.annotate("not run", (xi, 0), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7)
        else:
            ax.annotate(f"{di:+.3f}", (xi, di), textcoords="offset points", xytext=(6, 3), ha="left", fontsize=7)
    ax.set_ylabel("(b) − (a): paired difference", fontsize=8)


def utility_curve_plot(rows: Sequence[Mapping], draws: Sequence[Mapping], path: Path, dpi: int = 100,
                       experiment: str = "") -> Path:
    """``utility.tsv``'s organ-mean rows (and ``draws.tsv``'s per-draw scores) as two panels over k: Dice of
    (a), (b) and (c) with 95 % bands, and (b) − (a) with its paired interval; the interval's unit below."""
    ks = sorted({int(r["real_patients"]) for r in rows if r["arm"] != SYNTHETIC})
    x_of = {k: i for i, k in enumerate(ks)}  # evenly spaced: k is a short list, often 1, 2, 4, ...
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.0, 3.8), dpi=dpi, gridspec_kw={"width_ratios": [3, 2]})
    _dice_panel(left, rows, draws, x_of)
    _delta_panel(right, rows, x_of)
    labels = [f"{k}" for k in ks]
    if ks:
        labels[-1] += "\n(all)"
    for ax in (left, right):
        ax.set_xticks(range(len(ks)), labels, fontsize=8)
        ax.set_xlabel("k: real labelled training patients", fontsize=8)
        ax.grid(True, alpha=0.3)
        ax.set_xlim(-0.3, len(ks) - 0.7)
    note = next((str(r["note"]).split(";")[0] for r in rows if r["class"] == ORGAN_MEAN and r["arm"] == REAL), "")
    fig.suptitle(f"{experiment + ': ' if experiment else ''}does synthetic data help when labelled patients are few?",
                 fontsize=10)
    fig.text(0.5, 0.01, f"bands: {note}", ha="center", fontsize=7)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return save_figure(fig, path)
