"""The report's pictures of the generated test cases (``report_samples``): the sample grid over cases, one
case across its slices, and coronal and sagittal views of up to three cases' volumes. Only cases with a
slice are drawn (``slice.require_classes`` may keep none of a case's); with none at all, each picture says
so instead of the stage failing after training."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, NamedTuple, Sequence

import numpy as np

from medsynth.data.slicing import CaseSlices
from medsynth.io.figures import message_figure
from medsynth.reporting.plots import case_strip, cases_with_slices, test_sample_grid
from medsynth.reporting.side_views import case_views, side_views_figure

NOTHING = "No test case has a slice (slice.require_classes kept none): nothing was generated to show."


def real_name(mode: str) -> str:
    """What the figures and the summary call the real image beside the samples: unpaired, the label map's own
    image is another modality (the one the labels were drawn on), shown for orientation only."""
    return "real" if mode == "paired" else "label source image"


class SampleFigures(NamedTuple):
    grid: Path
    strip: Path
    side: Path


def sample_figures(cases: Sequence[tuple[str, Path, Path]], num_classes: int, spacings: Mapping[str, Sequence[float]],
                   out: SampleFigures, rows: int, dpi: int, real_name: str = "real") -> SampleFigures:
    """The three pictures of ``cases`` ((case id, real slices.npz, generated samples.npz)); ``spacings``: each
    case's preprocessed grid spacing (x, y, z mm), for the side views' true proportions."""
    shown = cases_with_slices(cases)
    if not shown:
        for path in out:
            message_figure(path, NOTHING, dpi=dpi)
        return out
    test_sample_grid(shown, num_classes, out.grid, rows=rows, dpi=dpi, real_name=real_name)
    case_id, real_path, gen_path = shown[0]
    real = CaseSlices.load(real_path)
    with np.load(gen_path) as f:
        fakes = f["samples"].astype(np.float32)
    case_strip(out.strip, case_id, real.labels, list(fakes), real.images, num_classes, dpi=dpi, real_name=real_name)
    views = []
    for case_id, real_path, gen_path in shown[:3]:
        real = CaseSlices.load(real_path)
        with np.load(gen_path) as f:
            fake = f["samples"][0].astype(np.float32)
        spacing = spacings[case_id]
        views.append((case_id, case_views(real.labels, real.masks, real.z, [("sample 1", fake),
                                                                             (real_name, real.images)]),
                      float(spacing[2]) / float(spacing[0])))
    side_views_figure(out.side, views, num_classes, dpi=dpi)
    return out
