"""Coronal and sagittal views through a case's stacked axial slices: does the volume hold together?

Slices of a case share one crop window (``slicing.crop_offset`` is per
volume), so stacking them by z rebuilds the cropped preprocessed volume, RAS+:
index i grows towards the patient's right (+x), j anteriorly (+y), z
superiorly. Views follow the radiological convention: coronal with the
patient's right on the screen's left and superior at the top; sagittal with
anterior on the screen's left and superior at the top. Slices the slicer did
not keep (too little body) are left at the fill value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from medsynth.io.images import coronal, sagittal, stack
from medsynth.io.figures import label_to_rgb, plt, save_figure


def body_centre(masks: np.ndarray) -> tuple[int, int]:
    """(i, j) in-plane centre of the body over all slices: where both side views cut through it."""
    body = np.asarray(masks).any(axis=0)
    if not body.any():
        return body.shape[0] // 2, body.shape[1] // 2
    ii, jj = np.nonzero(body)
    return int(round(ii.mean())), int(round(jj.mean()))


def case_views(labels: np.ndarray, masks: np.ndarray, z: np.ndarray,
               images: Sequence[tuple[str, np.ndarray]]) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, coronal, sagittal) for the label map and each named stack of images of one case."""
    i, j = body_centre(masks)
    lab = stack(labels, z, 0)
    out = [("label", coronal(lab, j), sagittal(lab, i))]
    for name, imgs in images:
        vol = stack(np.asarray(imgs, np.float32), z, -1.0)
        out.append((name, coronal(vol, j), sagittal(vol, i)))
    return out


def side_views_figure(path: Path, cases: Sequence[tuple[str, list, float]], num_classes: int,
                      dpi: int = 100) -> Path:
    """One row per (case id, ``case_views``, slice spacing / in-plane spacing): coronal then sagittal
    view of the label map and each image stack, drawn with the case's true aspect."""
    columns = max(len(views) for _, views, _ in cases)
    width = 2.2  # inches a panel; its height follows the volume's true proportions
    tallest = max(max(v[1].shape[0] * aspect / v[1].shape[1], v[2].shape[0] * aspect / v[2].shape[1])
                  for _, views, aspect in cases for v in views)
    height = max(width * tallest, 0.9)  # a few thick slices still get a panel one can read
    fig, axes = plt.subplots(len(cases), 2 * columns, figsize=(width * 2 * columns, (height + 0.5) * len(cases) + 0.4),
                             dpi=dpi, squeeze=False)
    for r, (case_id, views, aspect) in enumerate(cases):
        for c in range(columns):
            for side, ax in enumerate(axes[r, 2 * c:2 * c + 2]):
                ax.set_xticks([])
                ax.set_yticks([])
                if c >= len(views):
                    ax.axis("off")
                    continue
                name, panel = views[c][0], views[c][1 + side]
                if name == "label":
                    ax.imshow(label_to_rgb(panel, num_classes), aspect=aspect, interpolation="nearest")
                else:
                    ax.imshow(panel, cmap="gray", vmin=-1, vmax=1, aspect=aspect, interpolation="nearest")
                ax.set_title(f"{name}, {'coronal' if side == 0 else 'sagittal'}", fontsize=7)
                if c == 0 and side == 0:
                    ax.set_ylabel(case_id, fontsize=7)
    fig.suptitle("side views through the axial stack (coronal: patient's right on the left; sagittal: anterior "
                 "on the left; superior up)", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)
