"""Label-only cases: a label map without an image, preprocessed for generation like a labelled case."""

from pathlib import Path

import json

import numpy as np
import pytest

from medsynth.data.label_only import preprocess_label_only
from medsynth.data.labels import LabelTable
from medsynth.data.preprocess import PreprocessSettings, preprocess_case
from medsynth.data.slicing import SliceSettings, slice_case
from medsynth.io.nifti import load_volume, save_volume
from medsynth.data.slice_set import SliceSet

# A TotalSegmentator-like table: no body class of its own, so preprocessing derives one.
TABLE = LabelTable.from_config([{"name": "background", "values": [0]}, *[{"name": f"c{v}", "values": [v]}
                                                                          for v in range(2, 10)]])


def _unlabelled_tissue_as_background(label: np.ndarray) -> np.ndarray:
    out = label.copy()
    out[out == 1] = 0  # the phantom's body value: real organ label sets leave that tissue unlabelled
    return out


@pytest.mark.parametrize("index", [0, 1])  # the phantom stores one case RAS, the other LPS
def test_label_only_case_lands_on_the_labelled_cases_grid_with_its_classes(tmp_path: Path, phantom_case,
                                                                         index: int) -> None:
    case = phantom_case(index)
    label = save_volume(tmp_path / "label.nii.gz", _unlabelled_tissue_as_background(case.label), case.affine)
    image = save_volume(tmp_path / "ct.nii.gz", case.ct, case.affine)
    settings = PreprocessSettings("CT", 8.0)
    preprocess_case("full", image, label, tmp_path / "full", TABLE, settings)
    meta = preprocess_label_only("lo", label, tmp_path / "lo", TABLE, settings, qc_path=tmp_path / "lo" / "qc.png")

    full_lab, lo_lab = (load_volume(tmp_path / d / "label.nii.gz") for d in ("full", "lo"))
    np.testing.assert_allclose(lo_lab.affine, full_lab.affine)  # the same RAS training grid
    organs = lambda a: np.where(a == TABLE.body_class, 0, a)  # noqa: E731 (the body class comes from each mask)
    np.testing.assert_array_equal(organs(lo_lab.array), organs(full_lab.array))
    mask = load_volume(tmp_path / "lo" / "mask.nii.gz").array > 0
    assert ((lo_lab.array > 0) == mask).all()  # labelled region + filled holes = body, all of it labelled
    assert (load_volume(tmp_path / "lo" / "image.nii.gz").array == -1).all()  # a placeholder, no image
    assert meta["label_only"] and meta["intensity"] is None and meta["source_affine"] == case.affine.tolist()
    assert json.loads((tmp_path / "lo" / "meta.json").read_text())["source_shape"] == list(case.label.shape)
    assert (tmp_path / "lo" / "qc.png").stat().st_size > 0

    # Slicing takes it like any case; training refuses it, naming the file and what to do.
    vols = [load_volume(tmp_path / "lo" / f"{n}.nii.gz").array for n in ("image", "label", "mask")]
    slices = slice_case(vols[0], vols[1], vols[2], SliceSettings(32, 0.05))
    assert len(slices.z) > 0
    slices.save(tmp_path / "lo" / "slices.npz")
    with pytest.raises(ValueError, match="slices.npz.*label-only.*generate_from"):
        SliceSet.from_files([("lo", tmp_path / "lo" / "slices.npz")])
