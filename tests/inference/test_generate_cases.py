"""Generation puts slices back onto the source grid: geometry and alignment."""

from pathlib import Path

import numpy as np
import pytest
import torch

import medsynth
from medsynth.data.intensity import IntensityMap
from medsynth.data.labels import LabelTable
from medsynth.data.phantom import PHANTOM_LABELS, make_case
from medsynth.data.preprocess import PreprocessSettings, preprocess_case
from medsynth.data.slicing import CaseSlices, SliceSettings, slice_case
from medsynth.inference.generate_cases import (GenerateSettings, LabelCase, assemble_volume, background_value,
                                               generate_case, load_generator, sample_seed, source_body)
from medsynth.io.nifti import load_volume, save_volume
from medsynth.models import build_generator
from medsynth.models.registry import ModelSpec
from medsynth.io.checkpoint import save_checkpoint

TABLE = LabelTable.from_config([{"name": n, "values": [v]} for v, n in sorted(PHANTOM_LABELS.items())])
SPEC = ModelSpec(g_channels=(16, 16, 8), d_channels=(8, 16), z_dim=4, spade_hidden=8)
CPU = torch.device("cpu")


def _settings(samples: int, seed: int, batch: int = 4, **kw) -> GenerateSettings:
    return GenerateSettings(samples=samples, seed=seed, batch=batch, device=CPU, **kw)


def _case(tmp, pre) -> LabelCase:
    return LabelCase("c", tmp / "slices.npz", pre, "test")


def _grid(pre) -> tuple[np.ndarray, np.ndarray]:
    """The preprocessed image and its body (label > 0) on the training grid."""
    label = load_volume(pre / "label.nii.gz", np.uint8).array
    return load_volume(pre / "image.nii.gz", np.float32).array, label > 0


@pytest.fixture(params=[0, 1], ids=["RAS", "LPS"])
def prepared(request, tmp_path):
    case = make_case(request.param, seed=3, shape=(64, 64, 10), spacing=(6.0, 6.0, 8.0))
    src = tmp_path / "src"
    save_volume(src / "ct.nii.gz", case.ct, case.affine)
    save_volume(src / "label.nii.gz", case.label, case.affine)
    pre = tmp_path / "pre"
    meta = preprocess_case("c", src / "ct.nii.gz", src / "label.nii.gz", pre, TABLE,
                           PreprocessSettings(modality="CT", spacing_xy=None, ct_window=(-1000, 1000)))
    image = load_volume(pre / "image.nii.gz", np.float32).array
    slices = slice_case(image, load_volume(pre / "label.nii.gz", np.uint8).array,
                        load_volume(pre / "mask.nii.gz", np.uint8).array, SliceSettings(size=64))
    slices.save(tmp_path / "slices.npz")
    return case, pre, meta, CaseSlices.load(tmp_path / "slices.npz"), tmp_path


def test_real_slices_reassemble_into_the_source_ct(prepared):
    """Feeding the real slices through the inverse path must give back the source CT (an oracle generator)."""
    case, pre, meta, _, _ = prepared
    volume = assemble_volume(*_grid(pre), meta)
    assert volume.shape == case.ct.shape
    region = case.label > 0
    # Tissue is kept 1 HU above the background value -1000 (where nothing is generated).
    expected = np.clip(case.ct, -999, 1000)[region]
    assert np.abs(volume[region] - expected).max() < 1e-3
    assert (volume[~region & (case.ct <= -1000)] == -1000).all()


def test_a_written_mr_holds_no_signal_outside_the_body(tmp_path):
    """The phantom's MR (air 0) through preprocessing and back as an oracle generator's volume: air is 0 again,
    not the curve's low end (the body's 0.5th percentile, as bright as fat: the body outline vanished), and the
    tissue keeps its intensities above that low end."""
    case = make_case(0, seed=3, shape=(64, 64, 10), spacing=(6.0, 6.0, 8.0))
    save_volume(tmp_path / "mr.nii.gz", case.mr, case.affine)
    save_volume(tmp_path / "label.nii.gz", case.label, case.affine)
    meta = preprocess_case("c", tmp_path / "mr.nii.gz", tmp_path / "label.nii.gz", tmp_path / "pre", TABLE,
                           PreprocessSettings(modality="MR", spacing_xy=None))
    curve = IntensityMap.from_meta(meta["intensity"])
    assert curve.lo > 0 and background_value(curve, "MR") == 0.0 and background_value(curve, "CT") == curve.lo
    volume = assemble_volume(*_grid(tmp_path / "pre"), meta)
    body = load_volume(tmp_path / "pre" / "mask.nii.gz", np.uint8).array > 0  # the phantom's grid is the source's
    assert (volume[~body] == 0).all() and (volume[body] > curve.lo).all()


def test_generate_case_writes_volumes_on_the_source_grid(prepared):
    case, pre, meta, slices, tmp = prepared
    torch.manual_seed(0)
    G = build_generator(SPEC, TABLE.num_classes)
    ckpt = save_checkpoint(tmp / "generator.pt", {"ema": G.state_dict(), "model": SPEC.to_dict(),
                                                  "num_classes": TABLE.num_classes})
    G2, n = load_generator(ckpt, torch.device("cpu"))
    rows = generate_case(G2, n, _case(tmp, pre), tmp / "out", TABLE, _settings(2, 5), 64)
    assert [r["sample"] for r in rows] == [0, 1]
    assert rows[0]["seed"] == sample_seed(5, "c", 0) != rows[1]["seed"]
    label = load_volume(tmp / "out" / "c" / "label.nii.gz")
    np.testing.assert_array_equal(label.affine, case.affine)
    np.testing.assert_array_equal(label.array, case.label)  # same grid, nearest path: exact
    vols = [load_volume(r["volume"]) for r in rows]
    for v in vols:
        np.testing.assert_allclose(v.affine, case.affine, atol=1e-6)
        assert v.array.shape == case.ct.shape and v.array.dtype == np.int16
        assert v.array.min() >= -1000 and v.array.max() <= 1000  # inside the CT window, in HU
    assert not np.array_equal(vols[0].array, vols[1].array)  # noise resampled per sample
    # Regenerating with the recorded seed reproduces sample 0 exactly; another batch size
    # changes only float rounding in the convolutions (the noise is drawn up front).
    again = generate_case(G2, n, _case(tmp, pre), tmp / "again", TABLE, _settings(1, 5), 64)
    np.testing.assert_array_equal(load_volume(again[0]["volume"]).array, vols[0].array)
    rebatched = generate_case(G2, n, _case(tmp, pre), tmp / "rebatched", TABLE, _settings(1, 5, batch=3), 64)
    assert np.abs(load_volume(rebatched[0]["volume"]).array.astype(int) - vols[0].array).max() <= 1
    # generate.pngs none: the same volume and crops, no PNG at all (a cluster's file count).
    bare = generate_case(G2, n, _case(tmp, pre), tmp / "bare", TABLE, _settings(1, 5, pngs=False), 64)
    np.testing.assert_array_equal(load_volume(bare[0]["volume"]).array, vols[0].array)
    assert bare[0]["pngs"] == "" and not list((tmp / "bare").rglob("*.png"))
    assert sorted(p.name for p in (tmp / "bare" / "c").iterdir()) == ["label.nii.gz", "sample_0.nii.gz",
                                                                       "samples.npz"]
    # A PNG per labelled slice (every body slice), the crops of the sliced ones in samples.npz.
    pngs = sorted((tmp / "out" / "c" / "sample_0").glob("*.png"))
    labelled = np.flatnonzero((load_volume(pre / "label.nii.gz").array > 0).any(axis=(0, 1)))
    assert [p.name for p in pngs] == [f"z{z:03d}.png" for z in labelled]
    with np.load(tmp / "out" / "c" / "samples.npz") as f:
        assert f["samples"].shape == (2, *slices.labels.shape) and np.array_equal(f["z"], slices.z)
    # Generated tissue under every labelled voxel of the label map written beside the volumes.
    assert all(r["background"] == -1000.0 and r["tissue_at_background"] == 0.0 for r in rows)


def test_a_label_map_finer_than_the_grid_gets_tissue_under_every_label_not_a_blend_with_air(tmp_path):
    """TotalSegmentator-like: organs at 0.75 mm, stored LPS, a 0.75 mm gap of unlabelled tissue between two of
    them, thin edges, a 2 x 2 patch; generated on a 1.5 mm grid with one intensity everywhere (an oracle).
    Back on the source grid every labelled voxel holds that intensity: blended with the air outside the
    grid's body, 3 % of such voxels had read below -500 HU while counting as tissue."""
    from medsynth.data.body_mask import fill_holes_inplane
    from medsynth.data.label_only import preprocess_label_only

    label = np.zeros((96, 80, 4), np.uint8)
    label[10:40, 20:60] = 3  # liver
    label[41:70, 20:60] = 4  # spleen, one voxel of gap after the liver
    label[73:76, 30:31] = 5  # a thin kidney strip
    label[84:86, 50:52, 1] = 5  # a 2 x 2 patch
    affine = np.diag([-0.75, -0.75, 3.0, 1.0])
    affine[:3, 3] = [40.0, 30.0, -5.0]
    save_volume(tmp_path / "label.nii.gz", label, affine)
    meta = preprocess_label_only("c", tmp_path / "label.nii.gz", tmp_path / "pre", TABLE,
                                 PreprocessSettings(modality="CT", spacing_xy=1.5))
    # A label-only case is written on the scale of the experiment's image dataset (generate_case's scale).
    meta = {**meta, "intensity": IntensityMap.ct((-1000, 1000), (-150, 250), 0.6).to_meta(), "modality": "CT"}
    grid_label = load_volume(tmp_path / "pre" / "label.nii.gz", np.uint8).array
    volume = np.where(grid_label > 0, 0.25, -1.0).astype(np.float32)  # the oracle: one intensity in the body
    out = assemble_volume(volume, grid_label > 0, meta, source_body(grid_label > 0, meta, label > 0))
    painted = IntensityMap.from_meta(meta["intensity"]).to_physical(np.float32(0.25))
    assert out.shape == label.shape
    np.testing.assert_allclose(out[label > 0], painted, atol=1e-3)
    assert (out[:5] == -1000).all() and (out[90:] == -1000).all()  # air far from the body stays air
    # A label one source voxel across, far from any tissue, which nearest resampling onto the grid drops: its
    # nearest grid voxel is body all the same (body_from_labels), so it holds generated tissue, not the
    # background value (the real TotalSegmentator map had 0.12 % of its labelled voxels there).
    plain = grid_label
    lone = label.copy()
    lone[61, 5, 2] = 5
    save_volume(tmp_path / "lone.nii.gz", lone, affine)
    meta = {**preprocess_label_only("c", tmp_path / "lone.nii.gz", tmp_path / "lone", TABLE,
                                    PreprocessSettings(modality="CT", spacing_xy=1.5)),
            "intensity": meta["intensity"], "modality": "CT"}
    grid_label = load_volume(tmp_path / "lone" / "label.nii.gz", np.uint8).array
    body = grid_label > 0
    out = assemble_volume(np.where(body, 0.25, -1.0).astype(np.float32), body, meta, source_body(body, meta, lone > 0))
    np.testing.assert_array_equal(grid_label == 5, plain == 5)  # dropped by the grid's labels ...
    assert set(np.round(out[lone > 0], 3).tolist()) == {round(float(painted), 3)}  # ... but not by its body
    # Which grows by that label's nearest grid voxel alone: every other outline is the labelled region's (all
    # labelled voxels' nearest grid voxels had put a ring of 84 voxels of tissue around this body).
    masks = [load_volume(tmp_path / case / "mask.nii.gz", np.uint8).array.astype(bool) for case in ("pre", "lone")]
    np.testing.assert_array_equal(masks[0], fill_holes_inplane((plain > 0) & (plain != TABLE.body_class)))
    assert not (masks[0] & ~masks[1]).any() and (masks[1] & ~masks[0]).sum() == 1


def test_resampled_grid_goes_back_to_the_source_grid(tmp_path):
    case = make_case(1, seed=4, shape=(64, 64, 8), spacing=(6.0, 6.0, 8.0))
    save_volume(tmp_path / "ct.nii.gz", case.ct, case.affine)
    save_volume(tmp_path / "label.nii.gz", case.label, case.affine)
    meta = preprocess_case("c", tmp_path / "ct.nii.gz", tmp_path / "label.nii.gz", tmp_path / "pre", TABLE,
                           PreprocessSettings(modality="CT", spacing_xy=9.0))
    volume = assemble_volume(*_grid(tmp_path / "pre"), meta)
    assert volume.shape == case.ct.shape
    liver = case.label == 3
    # Linear resampling blurs edges, but organ interiors keep their HU.
    assert abs(np.median(volume[liver]) - np.median(case.ct[liver])) < 40


def _exported_generator(path: Path, spacing_xy: float) -> Path:
    """A random small generator as the select rule exports it: weights and the data settings generation reads."""
    torch.manual_seed(0)
    G = build_generator(SPEC, TABLE.num_classes)
    labels = [{"name": n, "values": [v]} for v, n in sorted(PHANTOM_LABELS.items())]
    return save_checkpoint(path, {
        "ema": G.state_dict(), "model": SPEC.to_dict(), "num_classes": TABLE.num_classes,
        "data": {"labels": labels, "modality": "CT", "slice": {"size": 64},
                 "preprocess": {"spacing_xy": spacing_xy, "ct_window": [-1000, 1000]}}})


def test_both_generation_paths_write_the_source_label_map_exactly(tmp_path):
    """The workflow (preprocessed case, resampled in-plane) and ``medsynth generate`` (any label file)
    write the same label map: the source map through the label table, on the source grid, unresampled."""
    from medsynth.inference.generate_cases import generate_from_label_files

    case = make_case(1, seed=4, shape=(64, 64, 8), spacing=(6.0, 6.0, 8.0))  # stored LPS
    src = tmp_path / "src"
    save_volume(src / "ct.nii.gz", case.ct, case.affine)
    save_volume(src / "c.nii.gz", case.label, case.affine)
    settings = PreprocessSettings(modality="CT", spacing_xy=9.0)
    preprocess_case("c", src / "ct.nii.gz", src / "c.nii.gz", tmp_path / "pre", TABLE, settings)
    pre = [load_volume(tmp_path / "pre" / f"{n}.nii.gz").array for n in ("image", "label", "mask")]
    slice_case(pre[0].astype(np.float32), *pre[1:], SliceSettings(size=64)).save(tmp_path / "slices.npz")
    ckpt = _exported_generator(tmp_path / "generator.pt", spacing_xy=9.0)
    G2, n = load_generator(ckpt, torch.device("cpu"))
    workflow = generate_case(G2, n, _case(tmp_path, tmp_path / "pre"), tmp_path / "wf", TABLE, _settings(1, 0), 64)
    cli = generate_from_label_files(ckpt, [src / "c.nii.gz"], tmp_path / "cli", _settings(1, 0))
    a, b = load_volume(workflow[0]["label"]), load_volume(cli[0]["label"])
    np.testing.assert_array_equal(a.array, case.label)  # the phantom's values are its class ids
    np.testing.assert_array_equal(b.array, case.label)
    np.testing.assert_array_equal(a.affine, case.affine)
    np.testing.assert_array_equal(b.affine, case.affine)
    sample = load_volume(workflow[0]["volume"])
    assert sample.array.shape == case.label.shape and np.allclose(sample.affine, case.affine)


def test_medsynth_generate_puts_tissue_under_a_label_thinner_than_the_grid(tmp_path):
    """``medsynth generate`` on a map finer than the generator's grid (6 mm, generated at 9 mm): labels one
    voxel across in the air beside the body, one of which nearest resampling onto the grid drops, still get
    generated tissue (the real TotalSegmentator map had 0.12 % of its labelled voxels at the background)."""
    from medsynth.data.geometry import canonical_grid, inplane_grid, resample_to_grid, to_canonical
    from medsynth.inference.generate_cases import generate_from_label_files

    case = make_case(1, seed=4, shape=(64, 64, 8), spacing=(6.0, 6.0, 8.0))  # stored LPS
    label = case.label.copy()
    assert not label[1:4, 1].any()
    for i, x in enumerate((1, 2, 3)):  # three consecutive columns: a 1.5x coarser grid samples two of them
        label[x, 1, 2 + i] = 3
    save_volume(tmp_path / "maps" / "c.nii.gz", label, case.affine)
    lone_c, aff_c = to_canonical(np.where(case.label > 0, 0, label), case.affine)
    shape, affine = inplane_grid(*canonical_grid(label.shape, case.affine), 9.0)
    assert np.count_nonzero(resample_to_grid(lone_c, aff_c, affine, shape, order=0)) < 3  # one is dropped
    ckpt = _exported_generator(tmp_path / "generator.pt", spacing_xy=9.0)
    rows = generate_from_label_files(ckpt, [tmp_path / "maps" / "c.nii.gz"], tmp_path / "cli", _settings(1, 0))
    image = load_volume(rows[0]["volume"]).array
    assert rows[0]["tissue_at_background"] == 0.0
    assert (image[[1, 2, 3], 1, [2, 3, 4]] > -1000).all()


def test_unpaired_generation_writes_the_image_datasets_scale(prepared):
    """CT label maps -> MR-like images: written as MR (float, 0..1000), not in the label CT's HU."""
    from medsynth.inference.generate_cases import generate_cases

    case, pre, _, _, tmp = prepared
    torch.manual_seed(0)
    G = build_generator(SPEC, TABLE.num_classes)
    labels = [{"name": n, "values": [v]} for v, n in sorted(PHANTOM_LABELS.items())]
    for mode, modality in (("unpaired", "MR"), ("paired", "CT")):
        ckpt = save_checkpoint(tmp / f"{mode}.pt", {
            "ema": G.state_dict(), "model": SPEC.to_dict(), "num_classes": TABLE.num_classes,
            "step": 300, "selected_by": {"ssim": 0.51234567},
            "data": {"labels": labels, "modality": modality, "mode": mode,
                     "preprocess": {"spacing_xy": None}, "slice": {"size": 64}}})
        rows = generate_cases(ckpt, [("c", tmp / "slices.npz", pre, "test")], tmp / mode, _settings(1, 0))
        vol = load_volume(rows[0]["volume"]).array
        # Provenance: the split part, and the generator's step and selection metric behind the volume.
        assert (rows[0]["part"], rows[0]["generator_step"], rows[0]["selected_by"]) == ("test", 300, "ssim=0.512346")
        assert rows[0]["medsynth_version"] == medsynth.__version__ and rows[0]["seed"] == sample_seed(0, "c", 0)
        if mode == "unpaired":
            assert vol.dtype == np.float32 and 0.0 <= vol.min() and vol.max() <= 1000.0
            assert rows[0]["background"] == 0.0 and rows[0]["tissue_at_background"] == 0.0
        else:
            assert vol.dtype == np.int16 and vol.min() >= -1000 and vol.max() <= 1000
    # The same images on the two scales: the MR volume is the CT one's [-1, 1] mapped onto 0..1000.
    ct = load_volume(tmp / "paired" / "c" / "sample_0.nii.gz").array.astype(np.float32)
    mr = load_volume(tmp / "unpaired" / "c" / "sample_0.nii.gz").array
    body = case.label > 0
    np.testing.assert_allclose(mr[body], (ct[body] + 1000.0) / 2.0, atol=1.0)
    assert (ct[~body] == -1000).all() and (mr[~body] == 0).all()  # the background value outside the body


def test_a_generate_from_case_with_images_is_written_on_the_generators_scale(prepared):
    """A labelled cohort no experiment trains on keeps its own preprocess.ct_window ([-1000, 1000] here); the
    generator learnt [-1024, 1500]: its volumes are in the generator's HU, not mapped by the case's window."""
    from medsynth.inference.generate_cases import generate_cases

    case, pre, _, _, tmp = prepared
    torch.manual_seed(0)
    labels = [{"name": n, "values": [v]} for v, n in sorted(PHANTOM_LABELS.items())]
    ckpt = save_checkpoint(tmp / "g.pt", {
        "ema": build_generator(SPEC, TABLE.num_classes).state_dict(), "model": SPEC.to_dict(),
        "num_classes": TABLE.num_classes, "data": {"labels": labels, "modality": "CT", "mode": "paired",
                                                   "preprocess": {"spacing_xy": None, "ct_window": [-1024, 1500]},
                                                   "slice": {"size": 64}}})
    vols = {}
    for part in ("test", "generate_from"):  # same case id, same seed: the same [-1, 1] images
        rows = generate_cases(ckpt, [("c", tmp / "slices.npz", pre, part)], tmp / part, _settings(1, 0))
        vols[part] = load_volume(rows[0]["volume"]).array.astype(np.float32)
    body = case.label > 0
    unit = vols["test"][body] / 1000.0  # the case's own window
    np.testing.assert_allclose(vols["generate_from"][body], (unit + 1.0) / 2.0 * 2524.0 - 1024.0, atol=2.0)
    assert (vols["generate_from"][~body] == -1024).all() and vols["generate_from"].max() <= 1500


def test_a_generate_from_cases_label_map_goes_through_its_own_datasets_table(tmp_path):
    """Same class names and order as the generator's (the config checks that), other values: its liver is
    4 and its spleen 3. Its label map beside the synthetic volume holds liver where its liver is."""
    from medsynth.inference.generate_cases import generate_cases

    swap = {3: 4, 4: 3}
    labels = [{"name": n, "values": [v]} for v, n in sorted(PHANTOM_LABELS.items())]
    theirs = [{"name": n, "values": [swap.get(v, v)]} for v, n in sorted(PHANTOM_LABELS.items())]
    case = make_case(1, seed=3, shape=(64, 64, 10), spacing=(6.0, 6.0, 8.0))
    stored = np.vectorize(lambda v: swap.get(int(v), int(v)))(case.label).astype(np.uint8)
    save_volume(tmp_path / "src" / "ct.nii.gz", case.ct, case.affine)
    save_volume(tmp_path / "src" / "label.nii.gz", stored, case.affine)
    pre = tmp_path / "pre"
    preprocess_case("c", tmp_path / "src" / "ct.nii.gz", tmp_path / "src" / "label.nii.gz", pre,
                    LabelTable.from_config(theirs), PreprocessSettings(modality="CT", spacing_xy=None))
    slice_case(load_volume(pre / "image.nii.gz", np.float32).array, load_volume(pre / "label.nii.gz", np.uint8).array,
               load_volume(pre / "mask.nii.gz", np.uint8).array, SliceSettings(size=64)).save(tmp_path / "slices.npz")
    ckpt = save_checkpoint(tmp_path / "g.pt", {
        "ema": build_generator(SPEC, TABLE.num_classes).state_dict(), "model": SPEC.to_dict(),
        "num_classes": TABLE.num_classes, "data": {"labels": labels, "modality": "CT", "mode": "paired",
                                                   "preprocess": {"spacing_xy": None, "ct_window": [-1000, 1000]},
                                                   "slice": {"size": 64}}})
    rows = generate_cases(ckpt, [("maps.c", tmp_path / "slices.npz", pre, "generate_from", "maps", "c")],
                          tmp_path / "out", _settings(1, 0), tables={"maps": theirs})
    written = load_volume(rows[0]["label"]).array
    np.testing.assert_array_equal(written, TABLE.apply(case.label, "phantom"))  # class ids by name: liver is liver
    assert (written[case.label == 3] == TABLE.names.index("liver")).all()


@pytest.mark.parametrize("spatial", [False, True])
def test_volume_noise_is_one_draw_shared_by_every_slice(spatial):
    """Per-volume noise: slices with the same label map get the same image (one patient along z);
    per-slice noise: they differ. Either way the seed reproduces the sample."""
    from medsynth.inference.generate_cases import synthesize

    torch.manual_seed(0)
    G = build_generator(ModelSpec(**{**SPEC.to_dict(), "spatial_noise": spatial}), 3).eval()
    labels = torch.zeros(5, 16, 16, dtype=torch.long)
    labels[:, 4:12, 4:12] = 1
    labels[:, 6:9, 6:9] = 2  # five identical label slices
    cpu = torch.device("cpu")
    volume = synthesize(G, labels, 3, seed=7, batch=2, device=cpu, noise="volume")
    per_slice = synthesize(G, labels, 3, seed=7, batch=2, device=cpu, noise="slice")
    assert all(torch.allclose(volume[i], volume[0], atol=1e-6) for i in range(1, 5))
    assert all((per_slice[i] - per_slice[0]).abs().max() > 1e-4 for i in range(1, 5))
    again = synthesize(G, labels, 3, seed=7, batch=5, device=cpu, noise="volume")
    torch.testing.assert_close(again, volume, atol=1e-5, rtol=0)
    other = synthesize(G, labels, 3, seed=8, batch=2, device=cpu, noise="volume")
    assert (other - volume).abs().max() > 1e-4  # another sample
    # Slices of many cases (validation, sample grids) keep a draw each unless told otherwise.
    torch.testing.assert_close(synthesize(G, labels, 3, seed=7, batch=2, device=cpu), per_slice)
    with pytest.raises(ValueError, match="generate.noise"):
        synthesize(G, labels, 3, seed=7, batch=2, device=cpu, noise="case")


def test_volume_noise_map_is_smooth_along_z_and_unit_variance():
    """With noise_sigma_mm the spatial map varies along z: neighbours correlate, distant slices do not."""
    from medsynth.inference.generate_cases import draw_noise

    G = build_generator(ModelSpec(**{**SPEC.to_dict(), "spatial_noise": True}), 3)
    z = list(range(40))
    lazy = draw_noise(G, 40, 32, 32, seed=3, noise="volume", z=z, sigma_slices=2.0)
    field = lazy[:]  # computed for the slices asked for: any batches read the same field
    torch.testing.assert_close(torch.cat([lazy[0:7], lazy[7:40]]), field)
    torch.testing.assert_close(lazy[:, :, 4:9, 2:3], field[:, :, 4:9, 2:3])
    assert abs(float(field.std()) - 1.0) < 0.05  # as white noise: the generator sees unit-variance noise
    flat = field.reshape(40, -1)

    def corr(d):
        return float(torch.nn.functional.cosine_similarity(flat[:-d], flat[d:], dim=1).mean())
    assert corr(1) > 0.8 and abs(corr(12)) < 0.1  # exp(-1/16) ~ 0.94 one slice apart, none 6 sigma apart
    assert not torch.equal(field[0], field[1])
    # Only the slices asked for, at their own positions: a subset of z reads the same field.
    part = draw_noise(G, 3, 32, 32, seed=3, noise="volume", z=[5, 6, 20], sigma_slices=2.0)[:]
    sub = draw_noise(G, 16, 32, 32, seed=3, noise="volume", z=list(range(5, 21)), sigma_slices=2.0)[:]
    torch.testing.assert_close(part, sub[[0, 1, 15]])
    flat_map = draw_noise(G, 4, 8, 8, seed=3, noise="volume", z=[0, 1, 2, 3], sigma_slices=0.0)
    assert all(torch.equal(flat_map[i], flat_map[0]) for i in range(4))


def test_a_generator_trained_with_context_generates_with_its_neighbours(prepared):
    """context_slices travels in the exported model; generation feeds each slice's neighbours' maps,
    and a generator with context refuses a bare label map."""
    from medsynth.inference.generate_cases import synthesize

    _, pre, _, slices, tmp = prepared
    spec = ModelSpec(**{**SPEC.to_dict(), "context_slices": 1})
    torch.manual_seed(0)
    G = build_generator(spec, TABLE.num_classes)
    assert G.fc.in_channels == 3 * TABLE.num_classes + SPEC.z_dim
    ckpt = save_checkpoint(tmp / "generator.pt", {"ema": G.state_dict(), "model": spec.to_dict(),
                                                  "num_classes": TABLE.num_classes})
    G2, n = load_generator(ckpt, torch.device("cpu"))
    assert G2.context_slices == 1
    rows = generate_case(G2, n, _case(tmp, pre), tmp / "out", TABLE, _settings(1, 5), 64)
    assert load_volume(rows[0]["volume"]).array.shape == load_volume(rows[0]["label"]).array.shape
    with pytest.raises(ValueError, match="label channels"):
        synthesize(G2, torch.from_numpy(slices.labels).long(), n, seed=0, batch=4, device=torch.device("cpu"))


@pytest.mark.parametrize("inplane", ["canvas", "tiles"])
def test_generated_tissue_lies_under_every_label_wider_than_the_crop_and_on_low_body_slices(tmp_path, inplane):
    """A body wider than slice.size and an organ tip on a slice with too little body for the slice rule:
    the crops training saw miss much of the labelled tissue, the synthetic volume misses none of it."""
    case = make_case(1, seed=4, shape=(64, 64, 10), spacing=(6.0, 6.0, 8.0))  # stored LPS, ~30 cm wide
    ct, label = case.ct.copy(), case.label.copy()
    ct[:, :, 0], label[:, :, 0] = -1000, 0
    ct[30:33, 30:33, 0], label[30:33, 30:33, 0] = 60, 3  # the liver's tip, 9 px of body on the slice
    src = tmp_path / "src"
    save_volume(src / "ct.nii.gz", ct, case.affine)
    save_volume(src / "label.nii.gz", label, case.affine)
    pre = tmp_path / "pre"
    preprocess_case("c", src / "ct.nii.gz", src / "label.nii.gz", pre, TABLE, PreprocessSettings("CT", 6.0))
    grid = [load_volume(pre / f"{n}.nii.gz").array for n in ("image", "label", "mask")]
    slices = slice_case(grid[0].astype(np.float32), grid[1], grid[2], SliceSettings(size=32))
    slices.save(tmp_path / "slices.npz")
    assert 0 not in slices.z.tolist()  # the tip's slice is below min_body_fraction
    covered = np.zeros(grid[1].shape, bool)  # what crop-only generation covered
    for z, (x0, y0) in zip(slices.z, slices.offsets):
        covered[max(x0, 0):x0 + 32, max(y0, 0):y0 + 32, z] = True
    assert ((grid[1] > 0) & ~covered).sum() / (grid[1] > 0).sum() > 0.2
    torch.manual_seed(0)
    G = build_generator(SPEC, TABLE.num_classes).eval()
    rows = generate_case(G, TABLE.num_classes, _case(tmp_path, pre), tmp_path / "out", TABLE,
                         _settings(1, 0, inplane=inplane), 32)
    image, written = load_volume(rows[0]["volume"]).array, load_volume(rows[0]["label"]).array
    assert rows[0]["tissue_at_background"] <= 0.01, rows[0]["tissue_at_background"]
    from medsynth.data.checks import tissue_at_background
    assert tissue_at_background(image, written, -1000.0) == rows[0]["tissue_at_background"]
    assert (image[:, :, 0][written[:, :, 0] == 3] > -1000).all()  # the organ tip has generated tissue
    assert (image[written == 0] == -1000).sum() > 0.5 * (ct == -1000).sum()  # air stays at the background value


def test_a_body_cut_by_the_field_of_view_has_generated_tissue_up_to_its_edge(tmp_path):
    """A large patient fills the scan's field of view (labels on every edge voxel), stored LPS at 0.7 mm
    and trained at 1.5 mm: the 23-voxel grid stops 0.5 mm short of the 35 mm field of view. The source's
    last row and column (index 0, stored LPS) had come back at -1000 under their labels (4 % of them)."""
    n = 50
    affine = np.diag([-0.7, -0.7, 2.5, 1.0])
    affine[:3, 3] = [17.0, 17.0, -100.0]
    ct, label = np.full((n, n, 4), 40, np.int16), np.full((n, n, 4), 2, np.uint8)  # body everywhere
    ct[15:35, 15:35], label[15:35, 15:35] = 60, 3
    save_volume(tmp_path / "ct.nii.gz", ct, affine)
    save_volume(tmp_path / "label.nii.gz", label, affine)
    pre = tmp_path / "pre"
    meta = preprocess_case("c", tmp_path / "ct.nii.gz", tmp_path / "label.nii.gz", pre, TABLE,
                           PreprocessSettings("CT", 1.5))
    assert meta["shape"][:2] == [23, 23]
    grid = [load_volume(pre / f"{k}.nii.gz").array for k in ("image", "label", "mask")]
    slice_case(grid[0].astype(np.float32), grid[1], grid[2], SliceSettings(size=16)).save(tmp_path / "slices.npz")
    torch.manual_seed(0)
    G = build_generator(SPEC, TABLE.num_classes).eval()
    rows = generate_case(G, TABLE.num_classes, _case(tmp_path, pre), tmp_path / "out", TABLE, _settings(1, 0), 16)
    image = load_volume(rows[0]["volume"]).array
    assert rows[0]["tissue_at_background"] == 0.0
    assert (image > -1000).all()  # every voxel is labelled: tissue everywhere, the edge rows included


def test_a_generator_giving_nan_is_refused_naming_the_case(prepared):
    """Broken weights (a diverged training) give NaN; written as int16 HU it would be any number."""
    case, pre, _, _, tmp = prepared
    torch.manual_seed(0)
    G = build_generator(SPEC, TABLE.num_classes).eval()
    with torch.no_grad():
        next(p for p in G.parameters() if p.dim() > 1).fill_(float("nan"))
    with pytest.raises(ValueError, match="case c, sample 0: the generator gave .* non-finite values"):
        generate_case(G, TABLE.num_classes, _case(tmp, pre), tmp / "out", TABLE, _settings(1, 0), 64)
    assert not list((tmp / "out").rglob("sample_0.nii.gz"))


def test_two_cases_with_one_id_are_refused_before_anything_is_written(prepared):
    """Own test case 'extra.s0001' and generate_from dataset extra's 's0001' (named <dataset>.<case>) would share
    cases/extra.s0001/: the later replaced the earlier and the generate_from rows pointed at the test case's
    volume, which the export shipped."""
    from medsynth.inference.generate_cases import generate_cases

    _, pre, _, _, tmp = prepared
    ckpt = _exported_generator(tmp / "generator.pt", None)
    cases = [("extra.s0001", tmp / "slices.npz", pre, "test", "totalseg", "extra.s0001"),
             ("extra.s0001", tmp / "slices.npz", pre, "generate_from", "extra", "s0001")]
    out = tmp / "out" / "cases"
    with pytest.raises(ValueError, match=r"case 's0001' of datasets.extra and case 'extra.s0001' of "
                                         r"datasets.totalseg would both be written to .*cases/extra.s0001/"):
        generate_cases(ckpt, cases, out, _settings(1, 0), work_dir=out.with_name("cases.unfinished"))
    assert not (tmp / "out").exists()


def test_a_stopped_generation_keeps_its_finished_cases_for_the_next_run(prepared, monkeypatch):
    """A generation job stopped at its time limit: Snakemake deletes its outputs before the retry, so the
    cases are written in a work folder; the retry takes up the closed ones, generates only the rest, and
    gives what one uninterrupted run gives. Other settings: nothing is taken up."""
    from medsynth.inference import generate_cases as gc

    case, pre, _, _, tmp = prepared
    torch.manual_seed(0)
    G = build_generator(SPEC, TABLE.num_classes)
    labels = [{"name": n, "values": [v]} for v, n in sorted(PHANTOM_LABELS.items())]
    ckpt = save_checkpoint(tmp / "g.pt", {
        "ema": G.state_dict(), "model": SPEC.to_dict(), "num_classes": TABLE.num_classes, "step": 1,
        "data": {"labels": labels, "modality": "CT", "mode": "paired", "preprocess": {"spacing_xy": None},
                 "slice": {"size": 64}}})
    cases = [(c, tmp / "slices.npz", pre, "train") for c in ("a", "b", "c")]
    straight = gc.generate_cases(ckpt, cases, tmp / "straight", _settings(1, 0), work_dir=tmp / "straight.work")
    assert not (tmp / "straight.work").exists() and not list((tmp / "straight").rglob("done.json"))

    made, real = [], gc.generate_case

    def stopped_after(n: int):
        def generate_case(G, num_classes, case, *args):
            if len(made) == n:
                raise KeyboardInterrupt("time limit")
            made.append(case.case_id)
            return real(G, num_classes, case, *args)
        return generate_case

    out, work = tmp / "out", tmp / "out.work"
    monkeypatch.setattr(gc, "generate_case", stopped_after(2))
    with pytest.raises(KeyboardInterrupt):
        gc.generate_cases(ckpt, cases, out, _settings(1, 0), work_dir=work)
    assert made == ["a", "b"] and not out.exists() and sorted(p.parent.name for p in work.glob("*/done.json")) == ["a", "b"]
    (work / "b" / "done.json").unlink()  # as if stopped while closing b: b is made again

    made.clear()
    monkeypatch.setattr(gc, "generate_case", stopped_after(99))
    rows = gc.generate_cases(ckpt, cases, out, _settings(1, 0), work_dir=work)
    assert made == ["b", "c"] and not work.exists()
    assert rows == [{**r, "volume": r["volume"].replace(str(tmp / "straight"), str(out)),
                     "label": r["label"].replace(str(tmp / "straight"), str(out)),
                     "pngs": r["pngs"].replace(str(tmp / "straight"), str(out))} for r in straight]
    for r in rows:
        assert (load_volume(r["volume"]).array == load_volume(r["volume"].replace(str(out), str(tmp / "straight"))).array).all()
    assert not list(out.rglob("done.json"))

    # Stopped again, then run with another seed: the closed case is of other settings and is made again.
    made.clear()
    monkeypatch.setattr(gc, "generate_case", stopped_after(1))
    with pytest.raises(KeyboardInterrupt):
        gc.generate_cases(ckpt, cases, tmp / "out2", _settings(1, 0), work_dir=tmp / "out2.work")
    made.clear()
    monkeypatch.setattr(gc, "generate_case", stopped_after(99))
    gc.generate_cases(ckpt, cases, tmp / "out2", _settings(1, 1), work_dir=tmp / "out2.work")
    assert made == ["a", "b", "c"]


def test_a_closed_case_of_another_key_is_removed_and_the_code_has_a_digest(tmp_path, monkeypatch):
    from medsynth.inference import resume

    case_dir = tmp_path / "a"
    case_dir.mkdir()
    (case_dir / "sample_0.nii.gz").write_bytes(b"old")
    resume.close_case(case_dir, "key-of-old-code", [{"case_id": "a"}])
    assert resume.finished_rows(case_dir, "key-of-old-code") == [{"case_id": "a"}]
    assert resume.finished_rows(case_dir, "key-of-new-code") is None and not case_dir.exists()
    digest = resume.code_digest()
    assert len(digest) == 64 and digest == resume.code_digest()


def test_a_closed_case_is_kept_when_only_the_device_or_batch_size_changed(tmp_path):
    """A generation stopped on one GPU and resumed on another with less memory (a smaller generate.batch_size)
    keeps its closed cases (the volumes are the same); another seed or sample count does not."""
    from dataclasses import replace

    from medsynth.inference import resume
    from medsynth.inference.generate_cases import GenerateSettings

    generator, label = tmp_path / "generator.pt", tmp_path / "label.nii.gz"
    generator.write_bytes(b"weights")
    label.write_bytes(b"label")
    base = GenerateSettings(samples=2, seed=0, batch=16, device=torch.device("cpu"))
    key = resume.case_key(generator, base, ("a", "train"), [label])
    assert resume.case_key(generator, replace(base, batch=4, device=torch.device("meta")), ("a", "train"), [label]) == key
    for other in (replace(base, seed=1), replace(base, samples=3), replace(base, pngs=False)):
        assert resume.case_key(generator, other, ("a", "train"), [label]) != key
