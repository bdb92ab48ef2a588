"""The report's figures: test-sample grids and case strips, metric and loss curves, the memorisation
pairs and class intensities (the utility curve: ``utility_plots``). Headless (Agg, set in ``io.figures``)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.patches import Patch

from medsynth.io.figures import label_to_rgb, plt, sample_grid, save_figure, show_panel
from medsynth.io.images import display_view
from medsynth.io.tables import parse_float, read_tsv
from medsynth.metrics.intensity import QUANTILE_KEYS


def _columns(path: Path) -> dict[str, np.ndarray]:
    rows = read_tsv(path)
    if not rows:
        return {}
    return {k: np.array([parse_float(r[k]) for r in rows]) for k in rows[0]}


def metric_curves(metrics_tsv: Path, path: Path, selected_step: int | None = None, dpi: int = 100) -> Path:
    """One panel per validation metric over training steps, the selected step marked."""
    cols = _columns(metrics_tsv)
    names = [k for k in cols if k != "step"]
    n = max(1, len(names))
    ncols = min(4, n)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 3.0 * nrows), dpi=dpi, squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, names):
        values = cols[name]
        if np.isfinite(values).any():
            ax.plot(cols["step"], values, marker="o", ms=3)
        else:
            ax.text(0.5, 0.5, "not computed", ha="center", va="center", transform=ax.transAxes)
            ax.set_yticks([])
        if len(cols.get("step", [])):
            ax.set_xlim(0, max(cols["step"]) * 1.05)
        if selected_step is not None:
            ax.axvline(selected_step, color="tab:red", ls="--", lw=1, label=f"selected (step {selected_step})")
            ax.legend(fontsize=7)
        ax.set_title(f"validation {name}", fontsize=9)
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average that does not shrink the series."""
    if window <= 1 or values.size == 0:
        return values
    c = np.cumsum(np.insert(values, 0, 0.0))
    out = np.empty_like(values, dtype=np.float64)
    for i in range(values.size):
        lo = max(0, i + 1 - window)
        out[i] = (c[i + 1] - c[lo]) / (i + 1 - lo)
    return out


def loss_curves(losses_tsv: Path, path: Path, window: int = 25, dpi: int = 100) -> Path:
    """Raw losses faint, smoothed losses bold, one panel for G and one for D."""
    cols = _columns(losses_tsv)
    groups = {"generator": [k for k in cols if k.startswith("loss_g")],
              "discriminator": [k for k in cols if k.startswith("loss_d")]}
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.0), dpi=dpi)
    for ax, (title, keys) in zip(axes, groups.items()):
        for i, k in enumerate(keys):
            color = f"C{i}"
            ax.plot(cols["step"], cols[k], color=color, alpha=0.25, lw=0.8)
            ax.plot(cols["step"], smooth(cols[k], window), color=color, lw=1.6, label=k)
        ax.set_title(f"{title} losses (moving average {window})", fontsize=9)
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
        if keys:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def cases_with_slices(cases) -> list:
    """The (case id, real slices.npz, generated samples.npz) whose slicing kept at least one slice, sorted
    (``slice.require_classes`` may keep none of a test case's: it has nothing to show)."""
    from medsynth.io.npz import npz_shape

    return [c for c in sorted(cases) if npz_shape(Path(c[1]), "z")[0] > 0]


def test_sample_grid(cases, num_classes: int, path: Path, rows: int = 6, dpi: int = 100,
                     real_name: str = "real") -> Path:
    """Grid over test cases: ``cases`` = (case id, real slices.npz, generated samples.npz).

    Rows are spread over cases and, within a case, over its slices, so the grid
    shows the anatomy's range rather than neighbouring slices.
    """
    from medsynth.data.slicing import CaseSlices

    picks = []
    cases = cases_with_slices(cases)
    if not cases:
        raise ValueError("test_sample_grid: no test case has a slice to show")
    per_case = max(1, -(-rows // max(1, len(cases))))
    # Only the cases the grid shows are read, and only the shown slices kept (copies, not views that hold
    # a case's whole arrays): ~75 MB a test case at 256 px, 31 GB on the login node for AutoPET's.
    for case_id, real_path, gen_path in cases[:-(-rows // per_case)]:
        real = CaseSlices.load(Path(real_path))
        with np.load(gen_path) as f:
            fakes = f["samples"]
        n = len(real.z)
        for i in np.unique(np.linspace(n * 0.2, n * 0.8, per_case).round().astype(int).clip(0, n - 1)):
            picks.append((f"{case_id} z{int(real.z[i])}", real.labels[i].copy(), fakes[:, i].astype(np.float32),
                          real.images[i].copy()))
        del real, fakes
    picks = picks[:rows]
    labels = np.stack([p[1] for p in picks])
    samples = [np.stack([p[2][k] for p in picks]) for k in range(picks[0][2].shape[0])]
    reals = np.stack([p[3] for p in picks])
    return sample_grid(path, labels, samples, reals, num_classes, title=f"test split: label | samples | {real_name}",
                       row_names=[p[0] for p in picks], dpi=dpi, real_name=real_name)


def case_strip(path: Path, case_id: str, labels, samples, reals, num_classes: int, columns: int = 8,
               dpi: int = 100, real_name: str = "real") -> Path:
    """One test case across its slices: rows label | sample 1..K | real, columns evenly spaced slices."""
    labels = np.asarray(labels)
    n = labels.shape[0]
    idx = np.unique(np.linspace(0, n - 1, min(columns, n)).round().astype(int))
    rows = [("label", [label_to_rgb(display_view(labels[i]), num_classes) for i in idx])]
    rows += [(f"sample {k + 1}", [display_view(np.asarray(s)[i]) for i in idx]) for k, s in enumerate(samples)]
    rows.append((real_name, [display_view(np.asarray(reals)[i]) for i in idx]))
    fig, axes = plt.subplots(len(rows), len(idx), figsize=(1.3 * len(idx), 1.35 * len(rows)), dpi=dpi,
                             squeeze=False)
    for r, (name, panels) in enumerate(rows):
        for c, panel in enumerate(panels):
            ax = axes[r, c]
            show_panel(ax, panel)
            if c == 0:
                ax.set_ylabel(name, fontsize=7)
    fig.suptitle(f"{case_id}: slices across the volume", fontsize=9)
    return save_figure(fig, path)


def memorisation_pairs(path: Path, pairs: Sequence[tuple[np.ndarray, np.ndarray, str, bool]], dpi: int = 100) -> Path:
    """The closest generated/training pairs of the memorisation audit: one column per pair, the
    generated test slice above its nearest training slice, titled with the distance ratio (red: flagged)."""
    n = max(1, len(pairs))
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n, 3.6), dpi=dpi, squeeze=False)
    for c in range(n):
        for r in range(2):
            axes[r, c].axis("off")
    for c, (generated, nearest, title, flagged) in enumerate(pairs):
        for r, img in enumerate((generated, nearest)):
            ax = axes[r, c]
            ax.axis("on")
            show_panel(ax, display_view(img))
        axes[0, c].set_title(title, fontsize=6, color=FLAG_COLOR if flagged else "black")
    axes[0, 0].set_ylabel("generated (test)", fontsize=7)
    axes[1, 0].set_ylabel("nearest training", fontsize=7)
    fig.suptitle("memorisation audit: the closest pairs (ratio: distance / real test slices' median)", fontsize=8)
    return save_figure(fig, path)


FLAG_COLOR = "tab:red"
SIDES = (("real", -0.19, "0.75"), ("generated", 0.19, "tab:blue"))


def class_intensity_plot(table_tsv: Path, path: Path, dpi: int = 100) -> Path:
    """``class_intensity.tsv`` as a figure: per class, the real and generated distributions side by side."""
    return save_figure(class_intensity_figure(read_tsv(table_tsv), dpi), path)


def class_intensity_figure(rows: Sequence[dict], dpi: int = 100):
    """Box 25-75 %, median, whiskers 5-95 %, mean as a diamond, from the table's percentiles (no pixels).

    Classes with no pixel on either side are left out. A class whose
    generated median lies outside the real 5-95 % range has its name in red.
    """
    rows = [r for r in rows if int(r["voxels_real"]) > 0 or int(r["voxels_generated"]) > 0]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.7 * len(rows) + 2.0), 4.2), dpi=dpi)
    for side, offset, color in SIDES:
        present = [(i, r) for i, r in enumerate(rows) if int(r[f"voxels_{side}"]) > 0]
        if not present:
            continue
        ax.bxp([_box(r, side) for _, r in present], positions=[i + offset for i, _ in present], widths=0.34,
               showmeans=True, patch_artist=True, manage_ticks=False, boxprops={"facecolor": color},
               medianprops={"color": "black"},
               meanprops={"marker": "D", "markersize": 4, "markerfacecolor": "white", "markeredgecolor": "black"})
    ax.set_xticks(range(len(rows)), [r["class"] for r in rows], rotation=40, ha="right")
    ax.set_xlim(-0.6, len(rows) - 0.4)
    for tick, r in zip(ax.get_xticklabels(), rows):
        if r["outside_real_range"] == "True":
            tick.set_color(FLAG_COLOR)
            tick.set_fontweight("bold")
    unit = rows[0]["unit"] if rows else ""
    ax.set_ylabel("HU" if unit == "HU" else f"intensity {unit} (no absolute scale)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_xlabel("class (in red: generated median outside the real 5-95 % range)", fontsize=8)
    ax.legend(handles=[Patch(facecolor=c, edgecolor="black", label=s) for s, _, c in SIDES],
              fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # outside: never over a box
    ax.set_title("per-class intensity, test split: box 25-75 %, median, whiskers 5-95 %, mean \u25c7", fontsize=9)
    fig.tight_layout()
    return fig


def _box(row: dict, side: str) -> dict:
    """``Axes.bxp``'s statistics of one side of a class_intensity.tsv row."""
    q = {k: parse_float(row[f"{k}_{side}"]) for k in QUANTILE_KEYS}
    return {"whislo": q["p05"], "q1": q["p25"], "med": q["p50"], "q3": q["p75"], "whishi": q["p95"],
            "mean": parse_float(row[f"mean_{side}"]), "fliers": []}
