"""bench/quality.py's segmentation-consistency ratio is the pipeline's: organ means over the organs scored on
both sides (unpaired, the label maps' organs and the image dataset's differ)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

from medsynth.data.labels import LabelTable
from medsynth.data.slice_set import SliceSet

REPO = Path(__file__).resolve().parents[1]


class Oracle(torch.nn.Module):
    """A segmenter that reads the class from the image: class c is drawn at intensity c / 10."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.classes, self.anchor = classes, torch.nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids = (x[:, 0] * 10).round().long().clamp(0, self.classes - 1)
        return torch.nn.functional.one_hot(ids, self.classes).permute(0, 3, 1, 2).float()


def _bench():
    spec = importlib.util.spec_from_file_location("quality_bench", REPO / "bench" / "quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_organ_means_are_over_the_organs_both_sides_have():
    quality = _bench()
    table = LabelTable.from_config([{"name": n, "values": [i]} for i, n in
                                    enumerate(["background", "liver", "kidney", "spleen"])])
    labels = torch.zeros(2, 8, 8, dtype=torch.long)
    labels[:, 2:4, 2:4], labels[:, 5:7, 5:7] = 1, 2  # generated side: liver and kidney
    real_labels = torch.zeros(2, 8, 8, dtype=torch.long)
    real_labels[:, 2:4, 2:4], real_labels[:, 5:7, 5:7] = 1, 3  # real side: liver and spleen
    fake = (labels.float() / 10)[:, None]
    fake[:, 0, 5:7, 5:7] = 0.0  # the kidney painted as background: Dice 0 on the generated side only
    real = SliceSet(images=(real_labels.float() / 10)[:, None].half(), labels=real_labels.byte(),
                    masks=(real_labels > 0).byte()[:, None], case_ids=["r", "r"], z=[0, 1])
    gen, ref, rows = quality.segmenter_scores(Oracle(table.num_classes), real, fake, labels, table)
    # Liver alone is scored on both sides: 1 and 1 (the kidney's 0 and the spleen's 1 are one side's only).
    assert gen == pytest.approx(1.0) and ref == pytest.approx(1.0)
    assert {r["class"]: (r["dice_gen"], r["dice_real"]) for r in rows}["kidney"][0] == 0.0
    assert math.isnan({r["class"]: r["dice_gen"] for r in rows}["spleen"])
