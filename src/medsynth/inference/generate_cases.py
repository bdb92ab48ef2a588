"""Test-set generation: K samples per label map, as 2D PNGs and as 3D volumes on the source grid."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, NamedTuple, Sequence

import numpy as np
import torch
from tqdm import tqdm

import medsynth

from medsynth.data.checks import same_grid_up_to_orientation, tissue_at_background
from medsynth.data.cohort import clashing_ids
from medsynth.data.geometry import inplane_grid, resample_to_grid, to_canonical
from medsynth.data.labels import LabelTable
from medsynth.data.intensity import IntensityMap
from medsynth.data.label_only import body_from_labels
from medsynth.data.preprocess import TISSUE_SHARE, add_body_class, back_to_source
from medsynth.data.slicing import CaseSlices, axial_stack
from medsynth.inference import resume
from medsynth.inference.canvas import Canvas, crop, generate_stack, paste, plan_canvas
from medsynth.io.images import display_view, save_png, unit_to_uint8
from medsynth.io.nifti import Volume, load_volume, nifti_stem, save_volume
from medsynth.models import build_generator
from medsynth.models.registry import ModelSpec
from medsynth.inference.generator_contract import exported_data, label_spacing_xy
from medsynth.io.checkpoint import load_checkpoint
from medsynth.inference.synthesize import NOISE_MODES, draw_noise, synthesize, volume_noise  # noqa: F401 (callers import them from here)

# Each synthetic volume with its provenance: the label case and split part it came from, the sample
# index, seed and noise mode that regenerate it, the generator (its training step and selection metric) and the
# medsynth version that wrote it.
# ``background``: the value a voxel holds where nothing was generated (outside the body); ``tissue_at_background``:
# the fraction of the label map's labelled voxels that hold it (0 when generation covered every label).
MANIFEST_COLUMNS = ["case_id", "dataset", "source_case", "patient_id", "part", "sample", "seed", "noise", "volume",
                    "label", "pngs", "generator_step", "selected_by", "medsynth_version", "background",
                    "tissue_at_background"]


class LabelCase(NamedTuple):
    """A preprocessed, sliced label case to generate for."""

    case_id: str  # unique among the experiment's generated cases: its folder under cases/
    slices: Path
    preprocess_dir: Path
    part: str  # its split part, or "generate_from" for a case of experiments.<e>.generate_from
    dataset: str = ""
    source_case: str = ""  # the case id in its dataset (default case_id)
    patient_id: str = ""


def sample_seed(base_seed: int, case_id: str, sample: int) -> int:
    """Seed of one (case, sample): regenerating it needs only these three values."""
    digest = hashlib.sha256(f"{base_seed}:{case_id}:{sample}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def load_generator(path: Path, device: torch.device) -> tuple[torch.nn.Module, int]:
    return generator_from_state(load_checkpoint(path, map_location=device), path, device)


def generator_from_state(state: dict, source: Path, device: torch.device) -> tuple[torch.nn.Module, int]:
    """The EMA generator held by a loaded checkpoint (``source`` names it in errors), in eval mode."""
    if "ema" not in state or "model" not in state:
        raise ValueError(f"{source}: holds no EMA generator; pass the generator exported by the select stage")
    G = build_generator(ModelSpec.from_dict(state["model"]), state["num_classes"]).to(device)
    G.load_state_dict(state["ema"])
    return G.eval(), state["num_classes"]


@dataclass(frozen=True)
class GenerateSettings:
    """How the synthetic volumes of a run are drawn (``generate`` in the config; ``medsynth generate``)."""

    samples: int = 1  # volumes per label map
    seed: int = 0  # base seed: each (case, sample) seed derives from it (``sample_seed``)
    batch: int = 16  # slices per generator call: changes only float rounding
    device: torch.device = torch.device("cpu")
    noise: str = "volume"  # see ``inference.synthesize.synthesize``
    noise_sigma_mm: float = 0.0  # the spatial noise map's smoothing along z
    inplane: str = "tiles"  # tiles | canvas: see ``inference.canvas`` (bench/coverage.py chose tiles)
    pngs: bool = True  # a PNG per generated slice, where the workflow asks (``write_samples``): generate.pngs


def synthetic_volume(G: torch.nn.Module, num_classes: int, label: np.ndarray, canvas: Canvas,
                     grid_affine: np.ndarray, seed: int, settings: GenerateSettings, tile: int) -> np.ndarray:
    """One synthetic volume on the preprocessed grid ([-1, 1]; -1 outside the body) for a label map (X, Y, Z)
    with its body class, generated on ``canvas`` (every labelled slice, the whole labelled extent; ``tile``:
    the training size, for ``tiles``). Noise as ``inference.synthesize.synthesize``, smoothed along z in mm
    of ``grid_affine``."""
    labels = crop(label, canvas.x0, canvas.y0, canvas.width, canvas.height, canvas.z, 0)
    spacing_z = float(np.linalg.norm(np.asarray(grid_affine)[:3, 2]))
    stack = generate_stack(G, num_classes, labels, canvas.z, seed, settings.batch, settings.device, settings.noise,
                           settings.noise_sigma_mm / spacing_z, settings.inplane, tile)
    volume = np.full(label.shape, -1.0, dtype=np.float32)
    paste(volume, stack, canvas)
    return volume


# Generated tissue is kept this far above the background value (in the volume's units: HU for CT), so
# that the background value in a written volume means "nothing generated here" (the export checks it).
TISSUE_MARGIN = {"CT": 1.0}
MR_TISSUE_MARGIN = 1e-3  # of the window


def background_value(curve: IntensityMap, modality: str) -> float:
    """What a written volume holds where nothing was generated (outside the body). CT: the window's low end
    (air, HU). MR: no signal, 0, as scanners and SynthRAD's masked MR write air, or the curve's low end where
    that lies below 0 (normalised MR). The curve's low end for MR is the 0.5th percentile of body intensities:
    as background it made air as bright as fat, and the body's outline vanished from the written MR."""
    return curve.lo if modality == "CT" else min(curve.lo, 0.0)


class SourceBody(NamedTuple):
    """Where a case's volumes hold tissue on the source grid (``source_body``): the same for every sample."""

    share: np.ndarray  # float32: the grid's body resampled linearly, the tissue share of a voxel's neighbours
    inside: np.ndarray  # bool: the voxels that hold tissue


def source_body(body: np.ndarray, meta: dict, labelled: np.ndarray | None = None) -> SourceBody:
    """The grid's ``body`` on the source grid: inside where it covers half a voxel or more, and every voxel
    ``labelled`` (the source label map > 0) that has tissue among its grid neighbours. A label the grid
    dropped far from any tissue (smaller than a grid voxel) keeps the background value, which
    ``tissue_at_background`` counts: a label-only body holds such a label's nearest grid voxel
    (``label_only.body_from_labels``), an image's body mask is widened to hold the grid's labels."""
    share = back_to_source(body.astype(np.float32), meta, order=1, cval=0.0)
    inside = share >= 0.5
    if labelled is not None:
        inside |= labelled & (share > TISSUE_SHARE)
    return SourceBody(share, inside)


def assemble_volume(volume: np.ndarray, body: np.ndarray, meta: dict, where: SourceBody | None = None) -> np.ndarray:
    """A generated volume on the preprocessed grid ([-1, 1]) -> physical intensities on the source grid.

    Inside the body (``where``: ``source_body``, by default of the grid's ``body`` alone) the generated
    tissue, kept above the curve's low end (+``TISSUE_MARGIN``); outside it, and beyond the preprocessed
    grid, the background value (``background_value``). A source voxel is the linear interpolation of its
    grid neighbours in the body alone (the tissue resampled, divided by the body's share): resampled with
    the air around it, a label map finer than the grid, whose organs TotalSegmentator leaves gaps between,
    had 3 % of its labelled voxels blended below -500 HU.
    """
    curve = IntensityMap.from_meta(meta["intensity"])
    physical = curve.to_physical(volume)
    floor = curve.lo + TISSUE_MARGIN.get(meta["modality"], MR_TISSUE_MARGIN * (curve.hi - curve.lo))
    physical = np.where(body, np.maximum(physical, floor), 0.0).astype(np.float32)
    where = source_body(body, meta) if where is None else where
    tissue = back_to_source(physical, meta, order=1, cval=0.0)
    out = np.full(tissue.shape, background_value(curve, meta["modality"]), dtype=np.float32)
    out[where.inside] = np.maximum(tissue[where.inside] / where.share[where.inside], floor)
    return out


def generate_case(G: torch.nn.Module, num_classes: int, case: LabelCase, out_dir: Path, table: LabelTable,
                  settings: GenerateSettings, tile: int, scale: tuple[IntensityMap, str] | None = None) -> list[dict]:
    """K synthetic volumes of one preprocessed case, on its source grid, with its label map.

    Every slice of the training-grid label map that carries a label, over its whole labelled extent
    (``inference.canvas``), not only the slices and crops training saw; ``samples.npz`` keeps the crops
    of the case's ``slices.npz`` (what evaluation compares with the real slices). ``scale`` (curve,
    modality) writes the images on another dataset's scale than the label case's own: unpaired mode,
    where CT label maps become MR-like images. ``tile``: the training size.
    """
    slices = CaseSlices.load(Path(case.slices))
    meta = json.loads((Path(case.preprocess_dir) / "meta.json").read_text())
    if scale is not None:
        meta = {**meta, "intensity": scale[0].to_meta(), "modality": scale[1]}
    case_dir = Path(out_dir) / case.case_id
    source_label = load_volume(Path(meta["source_label"]), np.integer, meta.get("source_series", {}).get("label"))
    label = label_on_source_grid(source_label, table, tuple(meta["source_shape"]), np.asarray(meta["source_affine"]))
    grid_label = load_volume(Path(case.preprocess_dir) / "label.nii.gz", np.uint8).array
    rows, crops = write_samples(G, num_classes, case.case_id, grid_label, label, meta, case_dir, settings, tile,
                                slices)
    np.savez_compressed(samples_file(out_dir, case.case_id), samples=np.stack(crops).astype(np.float16), z=slices.z)
    return rows


def write_samples(G: torch.nn.Module, num_classes: int, case_id: str, grid_label: np.ndarray, label: np.ndarray,
                  meta: dict, case_dir: Path, settings: GenerateSettings, tile: int,
                  slices: CaseSlices | None = None) -> tuple[list[dict], list[np.ndarray]]:
    """Write ``label`` (source grid) and each sample's volume of one case: (manifest rows, and per sample the
    crops of ``slices`` cut from it, on the preprocessed grid). With ``slices`` (the workflow) and
    ``settings.pngs`` a PNG per sample and labelled slice too."""
    pngs = slices is not None and settings.pngs
    source_affine = np.asarray(meta["source_affine"])
    label_file = save_volume(case_dir / "label.nii.gz", label, source_affine)
    canvas = plan_canvas(grid_label, tile, 2 ** getattr(G, "num_up", 0))
    body = grid_label > 0
    if pngs:
        for lab, z in zip(crop(grid_label, canvas.x0, canvas.y0, canvas.width, canvas.height, canvas.z, 0), canvas.z):
            save_png(case_dir / "labels" / f"z{int(z):03d}.png", display_view(lab))
    background = background_value(IntensityMap.from_meta(meta["intensity"]), meta["modality"])
    where = source_body(body, meta, label > 0)
    rows, crops = [], []
    for k in range(settings.samples):
        seed = sample_seed(settings.seed, case_id, k)
        volume = synthetic_volume(G, num_classes, grid_label, canvas, meta["affine"], seed, settings, tile)
        check_finite(volume, case_id, k)
        if pngs:
            stack = crop(volume, canvas.x0, canvas.y0, canvas.width, canvas.height, canvas.z, -1.0)
            for img, z in zip(stack, canvas.z):
                save_png(case_dir / f"sample_{k}" / f"z{int(z):03d}.png", unit_to_uint8(display_view(img)))
        image = _physical(assemble_volume(volume, body, meta, where), meta)
        vol_file = save_volume(case_dir / f"sample_{k}.nii.gz", image, source_affine)
        rows.append({"case_id": case_id, "sample": k, "seed": seed,
                     "noise": noise_label(G, settings.noise, settings.noise_sigma_mm), "volume": str(vol_file),
                     "label": str(label_file), "pngs": str(case_dir / f"sample_{k}") if pngs else "",
                     "background": float(background),
                     "tissue_at_background": tissue_at_background(image, label, background)})
        if slices is not None:
            crops.append(_crops_like(volume, slices))
    return rows, crops


def check_finite(volume: np.ndarray, case_id: str, sample: int) -> None:
    """Refuse a generated volume holding NaN: written as int16 HU it would be any number, and evaluation's
    histograms skip NaN (a generator giving NaN on part of the body scored a near-perfect intensity W1)."""
    bad = volume.size - int(np.count_nonzero(np.isfinite(volume)))
    if bad:
        raise ValueError(f"case {case_id}, sample {sample}: the generator gave {bad} non-finite values (NaN): its "
                         "weights are broken (did training diverge? see its losses.tsv); select another checkpoint")


def _crops_like(volume: np.ndarray, slices: CaseSlices) -> np.ndarray:
    """The windows of ``slices`` (its z and crop offsets) cut from a volume on the preprocessed grid."""
    size = slices.labels.shape[-1]
    out = np.empty((len(slices.z), size, size), dtype=np.float32)
    for x0, y0 in {(int(a), int(b)) for a, b in slices.offsets}:
        pick = (slices.offsets[:, 0] == x0) & (slices.offsets[:, 1] == y0)
        out[pick] = axial_stack(volume, x0, y0, size, -1.0, slices.z[pick])
    return out


def label_on_source_grid(label: Volume, table: LabelTable, shape: tuple[int, ...],
                         affine: np.ndarray) -> np.ndarray:
    """The label map written beside synthetic volumes: the source label map through the label table.

    One rule for the workflow and ``medsynth generate``: class ids of the
    dataset's own table, read from the source file and never resampled (a map
    stored in another orientation of the image's grid is reoriented exactly),
    so a segmentation model trains on the labels the user gave. A derived body
    class is not in it: no label value maps to it, so unlabelled tissue stays
    background, as in the source map. (The training-grid map the generator saw
    holds the body class and was resampled in-plane; sent back to the source
    grid it differs from the source map along every organ's edge.)
    """
    classes = table.apply(label.array, str(label.path))
    if label.array.shape == tuple(shape) and np.allclose(label.affine, affine, atol=1e-3):
        return classes
    if not same_grid_up_to_orientation(label.array.shape, label.affine, shape, affine):
        raise ValueError(f"{label.path}: label map of shape {label.array.shape} is not on the image's grid {shape}")
    canonical, affine_c = to_canonical(classes, label.affine)
    return resample_to_grid(canonical, affine_c, affine, tuple(shape), order=0)


def _physical(volume: np.ndarray, meta: dict) -> np.ndarray:
    """CT in HU as int16 (what the source CT holds); MR as float32."""
    if meta["modality"] == "CT":
        return np.clip(np.rint(volume), -32768, 32767).astype(np.int16)
    return volume


def samples_file(out_dir: Path, case_id: str) -> Path:
    """Where ``generate_case`` stores a case's generated slices (all samples, float16)."""
    return Path(out_dir) / case_id / "samples.npz"


def generated_cases(real_files: Sequence[str | Path], out_dir: Path) -> list[tuple[str, Path, Path]]:
    """(case id, real slices.npz, generated samples.npz) for the test cases' slice files."""
    return [(Path(p).parent.name, Path(p), samples_file(out_dir, Path(p).parent.name)) for p in real_files]


def generate_cases(generator_path: Path, cases: Sequence[tuple], out_dir: Path,
                   settings: GenerateSettings, work_dir: Path | None = None,
                   tables: Mapping[str, Sequence[Mapping]] | None = None) -> list[dict]:
    """``cases``: every case to generate for (``LabelCase`` or a tuple of its fields).

    ``tables``: dataset -> label table (the config's list) of the generate_from datasets. Their label maps
    hold their own values (the config checks only that the class names and order are the generator's):
    the label map written beside the synthetic volumes goes through its own dataset's table, as its
    preprocessing did, not the generator's (liver 5 there and kidney 5 here shipped its liver as kidney).

    ``work_dir`` (the workflow): the cases are written there first, each closed once complete, and the
    folder becomes ``out_dir`` at the end; a run stopped midway (a time limit) leaves its closed cases for
    the next run with the same generator, settings and inputs (``inference.resume``).
    """
    cases = sorted(LabelCase(*c) for c in cases)
    # Before anything is written: two cases with one id share a folder, and one's rows point at the other's volume.
    clashes = clashing_ids([(c.case_id, c.dataset, c.source_case or c.case_id) for c in cases], str(out_dir))
    if clashes:
        raise ValueError("\n".join(clashes))
    state = load_checkpoint(generator_path, map_location=settings.device)
    data = exported_data(state, generator_path)
    table = LabelTable.from_config(data["labels"])
    own_tables = {d: LabelTable.from_config(t) for d, t in (tables or {}).items()}
    G, num_classes = generator_from_state(state, generator_path, settings.device)
    tile = int(data["slice"]["size"])
    store = resume.Resumable(out_dir, work_dir, generator_path, settings) if work_dir is not None \
        else resume.Straight(out_dir)
    rows = []
    for case in tqdm(cases, desc="generate", unit="case"):
        meta = json.loads((Path(case.preprocess_dir) / "meta.json").read_text())
        inputs = [case.slices, Path(case.preprocess_dir) / "meta.json", Path(case.preprocess_dir) / "label.nii.gz",
                  meta["source_label"]]
        done = store.finished(case, inputs)
        if done is not None:
            rows += done
            continue
        # Paired, the generator's own dataset: each case's own curve (an MR case's own percentile window).
        # Unpaired, a label-only case (no curve of its own) or a generate_from case (its dataset's
        # preprocess settings, e.g. another ct_window, are not what the generator learned): the scale of
        # the images the generator learned.
        own_scale = data.get("mode") != "unpaired" and not meta.get("label_only") and case.part != "generate_from"
        scale = None if own_scale else image_scale(data)
        case_rows = [{**row, "part": case.part, "dataset": case.dataset,
                      "source_case": case.source_case or case.case_id,
                      "patient_id": case.patient_id or case.source_case or case.case_id, **provenance(state)}
                     for row in generate_case(G, num_classes, case, store.folder,
                                              own_tables.get(case.dataset, table) if case.part == "generate_from"
                                              else table, settings, tile, scale)]
        store.close(case.case_id, case_rows)
        rows += case_rows
    return store.publish([c.case_id for c in cases], rows)


def noise_label(G: torch.nn.Module, noise: str, noise_sigma_mm: float) -> str:
    """The manifest's ``noise`` column: the mode, and for volumes the smoothing that regenerates them
    (only a spatial noise map is smoothed; a noise vector is one draw per volume whatever the setting)."""
    smoothed = noise == "volume" and noise_sigma_mm > 0 and getattr(G, "spatial_noise", False)
    return f"volume:{noise_sigma_mm:g}mm" if smoothed else noise


def provenance(state: dict) -> dict:
    """The generator behind a synthetic volume, for its manifest row."""
    selected = ";".join(f"{k}={v:.6g}" for k, v in (state.get("selected_by") or {}).items())
    return {"generator_step": state.get("step", ""), "selected_by": selected, "medsynth_version": medsynth.__version__}


def image_scale(data: dict) -> tuple[IntensityMap, str]:
    """(curve, modality) of the images a generator was trained on, from its exported data settings."""
    if data["modality"] == "CT":
        pre = data["preprocess"]
        return IntensityMap.ct(pre.get("ct_window", (-1000.0, 1000.0)), pre.get("ct_soft_window"),
                               pre.get("ct_soft_share", 0.6)), "CT"
    return IntensityMap.window(0.0, 1000.0), data["modality"]  # MR has no absolute scale: [-1, 1] as 0..1000


def generate_from_label_files(generator_path: Path, label_files: Sequence[Path], out_dir: Path,
                              settings: GenerateSettings) -> list[dict]:
    """Synthetic volumes for any label maps, using the data settings stored in the exported generator.

    Each label map is mapped through the training label table, reoriented and
    resampled (nearest) like the training data, generated on every labelled
    slice over its whole labelled extent (``inference.canvas``) and written
    back onto its own grid and affine, together with its class-id label map
    (``label_on_source_grid``). A label map has no body outline of its own
    unless its table has a body class: then the body is the labelled region
    with its in-plane holes filled, and the nearest grid voxel of a labelled
    source voxel the grid's labels dropped (``label_only.body_from_labels``).
    """
    state = load_checkpoint(generator_path, map_location=settings.device)
    data = exported_data(state, generator_path)
    table = LabelTable.from_config(data["labels"])
    G, num_classes = generator_from_state(state, generator_path, settings.device)
    tile = int(data["slice"]["size"])
    spacing_xy = label_spacing_xy(data)
    curve, _ = image_scale(data)
    rows: list[dict] = []
    for case_id, label_file in tqdm(label_map_ids(label_files), desc="generate", unit="volume"):
        vol = load_volume(label_file, np.integer)
        classes = label_on_source_grid(vol, table, vol.array.shape, vol.affine)
        lab_c, aff_c = to_canonical(classes, vol.affine)
        shape, affine = inplane_grid(lab_c.shape, aff_c, spacing_xy)
        lab_r = resample_to_grid(lab_c, aff_c, affine, shape, order=0)
        add_body_class(lab_r, body_from_labels(classes > 0, vol.affine, lab_r, affine), table)
        meta = {"shape": list(shape), "affine": affine.tolist(), "source_shape": list(vol.array.shape),
                "source_affine": vol.affine.tolist(), "intensity": curve.to_meta(), "modality": data["modality"]}
        rows += write_samples(G, num_classes, case_id, lab_r, classes, meta, Path(out_dir) / case_id, settings,
                              tile)[0]
    return [{**row, "part": "", **provenance(state)} for row in rows]


def label_map_ids(label_files: Sequence[Path]) -> list[tuple[str, Path]]:
    """(case id, file) of label maps, sorted: the file name without its NIfTI suffix, each the name of its
    output folder. Two maps with one id (``a.nii`` beside ``a.nii.gz``) would write into one folder."""
    ids: dict[str, Path] = {}
    for label_file in sorted(Path(f) for f in label_files):
        case_id = nifti_stem(label_file)
        if case_id in ids:
            raise ValueError(f"{ids[case_id]} and {label_file}: both name case {case_id!r}, whose volumes "
                             "would overwrite each other; rename one or move it to another folder")
        ids[case_id] = label_file
    return list(ids.items())
