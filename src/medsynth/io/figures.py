"""Pictures of slices written to disk, headless (Agg): label colours, sample grids, the preprocessing
QC picture. Stages below reporting draw with these; the report's figures build on them."""

from __future__ import annotations

import colorsys
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from medsynth.io.atomic import replacing  # noqa: E402
from medsynth.io.images import display_view  # noqa: E402


def label_colors(num_classes: int) -> np.ndarray:
    """(C, 3) colours, each class its own: background black, classes 1-20 tab20's (as always), then tab20b's
    and tab20c's, then hues a golden angle apart. tab20 alone repeated from class 21 (TotalSegmentator's
    pelvis table: liver in the body's colour)."""
    tab20 = plt.get_cmap("tab20").colors
    palette = [tab20[i % 20] for i in range(21)] + list(plt.get_cmap("tab20b").colors) + list(
        plt.get_cmap("tab20c").colors)
    palette += [colorsys.hsv_to_rgb((k * 0.381966) % 1.0, (0.9, 0.6, 0.75)[k % 3], (0.95, 0.8, 0.65)[k // 3 % 3])
                for k in range(max(0, num_classes - len(palette)))]
    colors = np.array(palette[:num_classes], dtype=np.float64).reshape(-1, 3)
    colors[0] = 0.0
    return colors


def label_to_rgb(label: np.ndarray, num_classes: int) -> np.ndarray:
    return label_colors(num_classes)[np.asarray(label, dtype=np.int64)]


def show_panel(ax, panel: np.ndarray) -> None:
    """An RGB label picture as it is, a grey image on the fixed [-1, 1] scale; no ticks."""
    if panel.ndim == 3:
        ax.imshow(panel, interpolation="nearest")
    else:
        ax.imshow(panel, cmap="gray", vmin=-1, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def save_figure(fig, path: Path) -> Path:
    path = Path(path)
    try:
        with replacing(path, path.stem + ".part" + path.suffix) as tmp:  # matplotlib's format from the ending
            fig.savefig(tmp, dpi=fig.dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def message_figure(path: Path, text: str, dpi: int = 100) -> Path:
    """A picture that says why there is nothing to draw, where a figure is expected (a report's output)."""
    fig, ax = plt.subplots(figsize=(6, 1.2), dpi=dpi)
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, fontsize=9, transform=ax.transAxes)
    return save_figure(fig, path)


def sample_grid(
    path: Path,
    labels,
    samples: Sequence,
    reals=None,
    num_classes: int = 2,
    title: str = "",
    row_names: Sequence[str] | None = None,
    dpi: int = 100,
    real_name: str = "real",
) -> Path:
    """One row per label map: label | sample 1..K | real (if given). Images in [-1, 1]."""
    labels = np.asarray(labels)
    samples = [np.asarray(s).reshape(labels.shape) for s in samples]
    reals = None if reals is None else np.asarray(reals).reshape(labels.shape)
    cols = 1 + len(samples) + (reals is not None)
    rows = labels.shape[0]
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.6 * rows), dpi=dpi, squeeze=False,
                             layout="constrained")  # keeps the title next to the first row
    heads = ["label"] + [f"sample {k + 1}" for k in range(len(samples))] + ([real_name] if reals is not None else [])
    for r in range(rows):
        panels = [label_to_rgb(display_view(labels[r]), num_classes)]
        panels += [display_view(s[r]) for s in samples]
        if reals is not None:
            panels.append(display_view(reals[r]))
        for c, panel in enumerate(panels):
            ax = axes[r, c]
            show_panel(ax, panel)
            if r == 0:
                ax.set_title(heads[c], fontsize=8)
        if row_names is not None:
            axes[r, 0].set_ylabel(row_names[r], fontsize=6)
    if title:
        fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


def preprocess_qc(path: Path, source, window: tuple[float, float], image, mask, label, num_classes: int,
                  title: str = "", dpi: int = 100) -> Path:
    """Before | after with the body-mask outline | labels: is the table gone, is the anatomy inside?"""
    fig, axes = plt.subplots(1, 3, figsize=(9.6, 3.4), dpi=dpi)
    axes[0].imshow(display_view(source), cmap="gray", vmin=window[0], vmax=window[1])
    axes[0].set_title("source (window)", fontsize=9)
    axes[1].imshow(display_view(image), cmap="gray", vmin=-1, vmax=1)
    axes[1].contour(display_view(mask.astype(float)), levels=[0.5], colors="tab:red", linewidths=0.8)
    axes[1].set_title("preprocessed, body mask outline", fontsize=9)
    axes[2].imshow(display_view(image), cmap="gray", vmin=-1, vmax=1)
    overlay = np.concatenate([label_to_rgb(display_view(label), num_classes),
                              (display_view(label) > 0)[..., None] * 0.5], axis=-1)
    axes[2].imshow(overlay, interpolation="nearest")
    axes[2].set_title("labels", fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)
