"""Test-set generation: K samples per label map, as 2D PNGs and as 3D volumes on the source grid."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import torch
from tqdm import tqdm

import medsynth

from medsynth.data.checks import same_grid_up_to_orientation
from medsynth.data.context import context_labels
from medsynth.data.geometry import inplane_grid, resample_to_grid, to_canonical
from medsynth.data.labels import LabelTable
from medsynth.data.intensity import IntensityMap
from medsynth.data.preprocess import add_body_class, back_to_source, fill_holes_inplane
from medsynth.data.slicing import CaseSlices, SliceSettings, paste, slice_case
from medsynth.io.images import display_view, save_png, unit_to_uint8
from medsynth.io.nifti import Volume, load_volume, save_volume
from medsynth.models import build_generator
from medsynth.models.registry import ModelSpec
from medsynth.train.checkpoint import load_checkpoint
from medsynth.train.data import generator_input

# Each synthetic volume with its provenance: the label case and split part it came from, the sample
# index, seed and noise mode that regenerate it, the generator (its training step and selection metric) and the
# medsynth version that wrote it.
MANIFEST_COLUMNS = ["case_id", "dataset", "source_case", "patient_id", "part", "sample", "seed", "noise", "volume",
                    "label", "pngs", "generator_step", "selected_by", "medsynth_version"]


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


NOISE_MODES = ("volume", "slice")


def volume_noise(G: torch.nn.Module, z: Sequence[int], h: int, w: int, g: torch.Generator,
                 sigma_slices: float) -> torch.Tensor:
    """Noise for the slices at axial indices ``z`` of one synthetic volume.

    A noise vector (one per image) is the same in every slice: one patient. A
    spatial noise map varies along z as a Gaussian-smoothed random field of
    standard deviation ``sigma_slices`` (in slices), rescaled to unit variance,
    so neighbouring slices' texture is correlated as in tissue instead of the
    same in every slice (a vertical streak in a coronal view) or unrelated
    (a jump between slices); 0 repeats one map.
    """
    n = len(z)
    if n == 0 or not getattr(G, "spatial_noise", False) or sigma_slices <= 0:
        one = G.noise(1, h, w, generator=g)
        return one.expand(n, *one.shape[1:])
    z = np.asarray(z, dtype=np.int64)
    radius = int(np.ceil(4 * sigma_slices))
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float32) / sigma_slices) ** 2)
    taps /= taps.square().sum().sqrt()  # unit variance for independent unit-variance draws
    span = int(z.max() - z.min()) + 1
    white = G.noise(span + 2 * radius, h, w, generator=g)
    field = sum(t * white[j : j + span] for j, t in enumerate(taps.tolist()))
    return field[torch.from_numpy(z - z.min())]


def draw_noise(G: torch.nn.Module, n: int, h: int, w: int, seed: int, noise: str,
               z: Sequence[int] | None = None, sigma_slices: float = 0.0) -> torch.Tensor:
    """The noise of ``n`` slices, all drawn up front from ``seed`` (see ``synthesize``)."""
    g = torch.Generator().manual_seed(seed)
    if noise == "volume":
        return volume_noise(G, range(n) if z is None else z, h, w, g, sigma_slices)
    if noise == "slice":
        return G.noise(n, h, w, generator=g)
    raise ValueError(f"generate.noise must be one of {', '.join(NOISE_MODES)}, got {noise!r}")


@torch.no_grad()
def synthesize(G: torch.nn.Module, labels: torch.Tensor, num_classes: int, seed: int, batch: int,
               device: torch.device, noise: str = "slice", context: torch.Tensor | None = None,
               z: Sequence[int] | None = None, sigma_slices: float = 0.0) -> torch.Tensor:
    """(N, H, W) class ids -> (N, 1, H, W) images on the CPU.

    ``noise`` "slice" (the default, for slices of any cases: validation, sample
    grids, benchmarks): a draw per slice; "volume", for the slices of one
    volume at axial indices ``z``: one patient, see ``volume_noise`` (and
    ``sigma_slices``). ``context`` (N, 2k, H, W): the neighbouring slices' label
    maps of a generator trained with context. All noise is drawn up front from
    ``seed``, so the images do not depend on the batch size: (seed, noise
    settings, label maps) reproduce a sample.
    """
    n, h, w = labels.shape
    zs = draw_noise(G, n, h, w, seed, noise, z, sigma_slices)
    out = []
    for i in range(0, n, batch):
        chunk = labels[i : i + batch].to(device)
        near = None if context is None else context[i : i + batch].to(device).long()
        out.append(G(generator_input(chunk, near, num_classes), zs[i : i + batch].to(device)).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, 1, h, w)


def synthesize_volume(G: torch.nn.Module, num_classes: int, slices: CaseSlices, grid_affine: np.ndarray, seed: int,
                      batch: int, device: torch.device, noise: str, noise_sigma_mm: float) -> np.ndarray:
    """(n, H, W) generated slices of one case's sliced label maps, with the neighbouring-slice context
    the generator was trained with and its noise (``synthesize``; ``noise_sigma_mm`` along z, in mm of
    the preprocessed grid ``grid_affine``)."""
    labels = torch.from_numpy(slices.labels).long()
    k = getattr(G, "context_slices", 0)
    context = torch.from_numpy(context_labels(slices.labels, [""] * len(slices.z), slices.z, k))
    spacing_z = float(np.linalg.norm(np.asarray(grid_affine)[:3, 2]))
    return synthesize(G, labels, num_classes, seed, batch, device, noise, context, slices.z,
                      noise_sigma_mm / spacing_z)[:, 0].numpy()


def assemble_volume(slices: CaseSlices, generated: np.ndarray, meta: dict) -> np.ndarray:
    """Generated slices -> preprocessed grid ([-1, 1]) -> intensities -> source grid."""
    vol = np.full(tuple(meta["shape"]), -1.0, dtype=np.float32)
    for img, z, (x0, y0) in zip(generated, slices.z, slices.offsets):
        paste(vol, img, int(x0), int(y0), int(z))
    curve = IntensityMap.from_meta(meta["intensity"])
    return back_to_source(curve.to_physical(vol), meta, order=1, cval=curve.lo)


def generate_case(
    G: torch.nn.Module,
    num_classes: int,
    case_id: str,
    slices_path: Path,
    preprocess_dir: Path,
    out_dir: Path,
    samples: int,
    base_seed: int,
    batch: int,
    device: torch.device,
    table: LabelTable,
    scale: tuple[IntensityMap, str] | None = None,
    noise: str = "volume",
    noise_sigma_mm: float = 0.0,
) -> list[dict]:
    """K synthetic volumes of one preprocessed case, on its source grid, with its label map.

    ``scale`` (curve, modality) writes the images on another dataset's scale than
    the label case's own: unpaired mode, where CT label maps become MR-like images.
    ``noise``, ``noise_sigma_mm``: as ``synthesize_volume``.
    """
    slices = CaseSlices.load(slices_path)
    meta = json.loads((preprocess_dir / "meta.json").read_text())
    if scale is not None:
        meta = {**meta, "intensity": scale[0].to_meta(), "modality": scale[1]}
    case_dir = out_dir / case_id
    source_affine = np.asarray(meta["source_affine"])
    source_label = load_volume(Path(meta["source_label"]), np.integer, meta.get("source_series", {}).get("label"))
    label = label_on_source_grid(source_label, table, tuple(meta["source_shape"]), source_affine)
    label_file = save_volume(case_dir / "label.nii.gz", label, source_affine)
    for lab, z in zip(slices.labels, slices.z):
        save_png(case_dir / "labels" / f"z{int(z):03d}.png", display_view(lab))

    rows, stacks = [], []
    for k in range(samples):
        seed = sample_seed(base_seed, case_id, k)
        fake = synthesize_volume(G, num_classes, slices, meta["affine"], seed, batch, device, noise, noise_sigma_mm)
        stacks.append(fake)
        for img, z in zip(fake, slices.z):
            save_png(case_dir / f"sample_{k}" / f"z{int(z):03d}.png", unit_to_uint8(display_view(img)))
        vol_file = save_volume(case_dir / f"sample_{k}.nii.gz", _physical(assemble_volume(slices, fake, meta), meta),
                               source_affine)
        rows.append({"case_id": case_id, "sample": k, "seed": seed, "noise": noise_label(G, noise, noise_sigma_mm),
                     "volume": str(vol_file),
                     "label": str(label_file), "pngs": str(case_dir / f"sample_{k}")})
    np.savez_compressed(samples_file(out_dir, case_id), samples=np.stack(stacks).astype(np.float16), z=slices.z)
    return rows


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


def generate_cases(
    generator_path: Path,
    cases: Sequence[tuple[str, Path, Path, str]],
    out_dir: Path,
    samples: int,
    seed: int,
    batch: int,
    device: torch.device,
    noise: str = "volume",
    noise_sigma_mm: float = 0.0,
) -> list[dict]:
    """``cases``: every case to generate for (``LabelCase`` or a tuple of its fields); ``noise``,
    ``noise_sigma_mm``: as ``synthesize_volume``."""
    state = load_checkpoint(generator_path, map_location=device)
    data = exported_data(state, generator_path)
    table = LabelTable.from_config(data["labels"])
    G, num_classes = generator_from_state(state, generator_path, device)
    rows = []
    for case in tqdm(sorted(LabelCase(*c) for c in cases), desc="generate", unit="case"):
        meta = json.loads((Path(case.preprocess_dir) / "meta.json").read_text())
        # Paired: each case's own curve (an MR case's own percentile window). Unpaired, or a
        # label-only case (no curve of its own): the scale of the images the generator learned.
        scale = image_scale(data) if data.get("mode") == "unpaired" or meta.get("label_only") else None
        for row in generate_case(G, num_classes, case.case_id, Path(case.slices), Path(case.preprocess_dir),
                                 Path(out_dir), samples, seed, batch, device, table, scale, noise,
                                 noise_sigma_mm):
            rows.append({**row, "part": case.part, "dataset": case.dataset,
                         "source_case": case.source_case or case.case_id,
                         "patient_id": case.patient_id or case.source_case or case.case_id, **provenance(state)})
    return rows


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


def exported_data(state: dict, source: Path) -> dict:
    """The data settings (label table, modality, spacing, slice size) an exported generator carries."""
    data = state.get("data") or {}
    if not data.get("labels"):
        raise ValueError(f"{source}: holds no data settings (label table, spacing); export it with the "
                         "select stage of this version")
    return data


def generate_from_label_files(
    generator_path: Path,
    label_files: Sequence[Path],
    out_dir: Path,
    samples: int,
    seed: int,
    batch: int,
    device: torch.device,
    noise: str = "volume",
    noise_sigma_mm: float = 0.0,
) -> list[dict]:
    """Synthetic volumes for any label maps, using the data settings stored in the exported generator.

    Each label map is mapped through the training label table, reoriented and
    resampled (nearest) like the training data, sliced around its labelled
    region, generated slice by slice and written back onto its own grid and
    affine, together with its class-id label map (``label_on_source_grid``).
    A label map has no body outline of its own unless its table has a body
    class: then the body is the labelled region with its in-plane holes filled.
    """
    state = load_checkpoint(generator_path, map_location=device)
    data = exported_data(state, generator_path)
    table = LabelTable.from_config(data["labels"])
    G, num_classes = generator_from_state(state, generator_path, device)
    size = int(data["slice"]["size"])
    spacing_xy = data.get("label_preprocess", data["preprocess"]).get("spacing_xy")
    curve, _ = image_scale(data)
    rows = []
    for label_file in tqdm(sorted(Path(f) for f in label_files), desc="generate", unit="volume"):
        vol = load_volume(label_file, np.integer)
        classes = label_on_source_grid(vol, table, vol.array.shape, vol.affine)
        lab_c, aff_c = to_canonical(classes, vol.affine)
        shape, affine = inplane_grid(lab_c.shape, aff_c, spacing_xy)
        lab_r = resample_to_grid(lab_c, aff_c, affine, shape, order=0)
        body = fill_holes_inplane(lab_r > 0)
        add_body_class(lab_r, body, table)
        slices = slice_case(np.full(shape, -1.0, np.float32), lab_r, body.astype(np.uint8),
                            SliceSettings(size=size, min_body_fraction=0.0))
        case_id = label_file.name.split(".")[0]
        meta = {"shape": list(shape), "affine": affine.tolist(), "source_shape": list(vol.array.shape),
                "source_affine": vol.affine.tolist(), "intensity": curve.to_meta(),
                "modality": data["modality"]}
        case_dir = Path(out_dir) / case_id
        label_out = save_volume(case_dir / "label.nii.gz", classes, vol.affine)
        for k in range(samples):
            s = sample_seed(seed, case_id, k)
            fake = synthesize_volume(G, num_classes, slices, affine, s, batch, device, noise, noise_sigma_mm)
            out = save_volume(case_dir / f"sample_{k}.nii.gz", _physical(assemble_volume(slices, fake, meta), meta),
                              vol.affine)
            rows.append({"case_id": case_id, "part": "", "sample": k, "seed": s,
                         "noise": noise_label(G, noise, noise_sigma_mm), "volume": str(out),
                         "label": str(label_out), "pngs": "", **provenance(state)})
    return rows
