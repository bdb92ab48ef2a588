"""A phantom cohort: each case a function of its index and the cohort's seed, written with its table."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medsynth.io.atomic import replacing
from medsynth.io.nifti import save_volume
from medsynth.data.phantom.anatomy import paint_tissues
from medsynth.data.phantom.ids import case_id
from medsynth.data.phantom.grid import (body_on_grid, check_grid, draw_body, draw_table, fit_to_fov, flip_xy, make_grid,
                                        ras_affine)
from medsynth.data.phantom.render import render_ct, render_mr, texture_field
from medsynth.data.phantom.tissues import TISSUE_LABEL

PHANTOM_LABELS: dict[int, str] = {
    0: "background",
    1: "body",  # subcutaneous fat and any other soft tissue inside the body outline
    2: "muscle",
    3: "liver",
    4: "spleen",
    5: "kidney",
    6: "lung",
    7: "bone",
    8: "aorta",
    9: "bowel_gas",
}

DEFAULT_SHAPE: tuple[int, int, int] = (256, 256, 32)
DEFAULT_SPACING: tuple[float, float, float] = (1.5, 1.5, 3.0)


@dataclass(frozen=True, eq=False)
class PhantomCase:
    """One synthetic patient, arrays in stored orientation (as in the written files).

    ``eq=False``: element-wise comparison of arrays has no single truth value.
    """

    case_id: str  # "phantom_000", "phantom_001", ...
    ct: np.ndarray  # int16 Hounsfield units
    mr: np.ndarray  # int16 MR-like intensities (>= 0), same grid
    label: np.ndarray  # uint8 class ids (keys of PHANTOM_LABELS), same grid
    affine: np.ndarray  # 4x4 float64 voxel-to-world (RAS+ world, mm), the file's affine
    orientation: str  # "RAS" or "LPS": axis codes of the stored array


def make_case(
    index: int,
    seed: int,
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    spacing: tuple[float, float, float] = DEFAULT_SPACING,
) -> PhantomCase:
    """Generate case ``index`` of the cohort ``seed``; independent of every other case."""
    shape, spacing = check_grid(shape, spacing)
    if index < 0 or seed < 0:
        raise ValueError(f"phantom index and seed must be >= 0, got index={index}, seed={seed}")
    # One stream per (seed, index): case i never depends on how many cases
    # were made before it. All anatomy draws come before any grid-sized draw,
    # so the same patient is drawn on every grid.
    rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
    body_params = draw_body(rng)
    table = draw_table(rng, body_params)
    scale, y_mid = fit_to_fov(body_params, table, shape, spacing)
    grid = make_grid(shape, spacing, scale, y_mid)
    body = body_on_grid(body_params, grid)

    tissue = paint_tissues(rng, grid, body, table)
    field = texture_field(rng, grid)
    ct = render_ct(rng, tissue, field)
    mr = render_mr(rng, tissue, field, grid)
    label = TISSUE_LABEL[tissue]

    affine = ras_affine(shape, spacing)
    orientation = "RAS"
    if index % 2 == 1:
        # Half the cohort is stored LPS (DICOM-style) so every consumer has to
        # honour the affine instead of assuming an array orientation.
        ct, mr, label = (np.ascontiguousarray(np.flip(v, axis=(0, 1))) for v in (ct, mr, label))
        affine = affine @ flip_xy(shape)
        orientation = "LPS"
    return PhantomCase(case_id(index), ct, mr, label, affine, orientation)


def write_cohort(
    out_dir: Path,
    n_cases: int,
    seed: int,
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    spacing: tuple[float, float, float] = DEFAULT_SPACING,
) -> Path:
    """Write ``n_cases`` phantoms and their ``cases.tsv``; return the table's path.

    The table is written last (and renamed into place) so its presence means
    every volume it lists is complete.
    """
    if n_cases < 1:
        raise ValueError(f"n_cases must be >= 1, got {n_cases}")
    out_dir = Path(out_dir)
    rows = []
    for index in range(n_cases):
        case = make_case(index, seed, shape, spacing)
        case_dir = out_dir / case.case_id
        save_volume(case_dir / "ct.nii.gz", case.ct, case.affine)
        save_volume(case_dir / "mr.nii.gz", case.mr, case.affine)
        save_volume(case_dir / "label.nii.gz", case.label, case.affine)
        cid = case.case_id
        rows.append(f"{cid}\t{cid}/ct.nii.gz\t{cid}/label.nii.gz\tCT\t{cid}/mr.nii.gz\n")
    table = out_dir / "cases.tsv"
    with replacing(table) as tmp:
        tmp.write_text("case_id\timage\tlabel\tmodality\tmr\n" + "".join(sorted(rows)))
    return table
