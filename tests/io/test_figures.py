"""Label colours: every class its own, however many the table has."""

from pathlib import Path

import matplotlib
import numpy as np
import pytest
import yaml

from medsynth.data.labels import LabelTable
from medsynth.io.figures import label_colors, label_to_rgb

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("num_classes", [2, 20, 21, 26, 118, 300])
def test_every_class_has_its_own_colour_and_background_is_black(num_classes: int) -> None:
    colors = label_colors(num_classes)
    assert colors.shape == (num_classes, 3) and colors.min() >= 0 and colors.max() <= 1
    assert len(np.unique(colors.round(6), axis=0)) == num_classes
    assert not colors[0].any()


def test_the_pelvis_tables_liver_is_not_drawn_in_the_bodys_colour() -> None:
    """tab20 alone repeated from class 21: in config/labels/totalsegmentator_v2_pelvis.yaml (24 classes and
    the derived body) liver (4) and body (24) were one colour. Classes 1-20 keep the colours of every earlier
    figure."""
    table = LabelTable.from_config(yaml.safe_load((ROOT / "config/labels/totalsegmentator_v2_pelvis.yaml").read_text()))
    rgb = label_to_rgb(np.arange(table.num_classes)[None], table.num_classes)[0]
    assert table.num_classes > 21 and len(np.unique(rgb.round(6), axis=0)) == table.num_classes
    tab20 = matplotlib.colormaps["tab20"].colors
    np.testing.assert_allclose(label_colors(21)[1:], np.array([tab20[i % 20] for i in range(1, 21)]))
