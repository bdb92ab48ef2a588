"""The built-in synthetic cohort: label maps with matching CT and MR, made by code.

The pipeline must be runnable (and testable end to end) without any licensed
or downloaded data, so this module invents patients. Each case is a function
of ``(index, seed, shape, spacing)`` only, which makes a cohort reproducible
bit for bit and lets any single case be regenerated on its own.

The anatomy is drawn in millimetres, not voxels, so the same patient appears
on any voxel grid; what the model later learns (label -> intensity) is the
same whatever grid the cohort is written on. The parts of a real scan that
have no label (CT table, foam pad, a cable) are included on purpose: real
training data have them, and the preprocessing must cope with them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medsynth.io.nifti import save_volume

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

# Fraction of the field of view that body + table may use in x and y; the rest
# is margin, so that cropping or augmentation downstream never cuts the body.
_FOV_FILL = 0.9

# Tissues are finer than labels: several tissues share a label (fat and the
# mesentery are both "body"; cortical and cancellous bone are both "bone") and
# some have none (table, foam, cable). Intensities are assigned per tissue.
# Columns: label, CT HU, CT texture sd, MR T1-like value, MR texture sd.
# A negative MR texture sd anti-correlates MR with CT: the mesentery is fat
# (dark on CT, bright on T1) where the texture is low and bowel where high.
_TISSUES: dict[str, tuple[int, float, float, float, float]] = {
    "air": (0, -1000.0, 0.0, 0.0, 0.0),
    "fat": (1, -100.0, 8.0, 900.0, 30.0),
    "viscera": (1, -40.0, 35.0, 620.0, -110.0),
    "muscle": (2, 50.0, 5.0, 280.0, 15.0),
    "liver": (3, 60.0, 6.0, 560.0, 20.0),
    "spleen": (4, 45.0, 5.0, 400.0, 15.0),
    "kidney": (5, 150.0, 12.0, 450.0, 25.0),
    "lung": (6, -850.0, 30.0, 15.0, 5.0),
    "marrow": (7, 300.0, 40.0, 620.0, 40.0),
    "cortex": (7, 700.0, 30.0, 40.0, 5.0),
    "aorta": (8, 200.0, 5.0, 30.0, 5.0),
    "gas": (9, -950.0, 10.0, 5.0, 0.0),
    "canal": (1, 15.0, 3.0, 180.0, 10.0),
    "disc": (1, 80.0, 5.0, 300.0, 15.0),
    "vein": (1, 130.0, 5.0, 120.0, 10.0),
    "heart": (1, 40.0, 5.0, 300.0, 15.0),
    "table": (0, 200.0, 0.0, 0.0, 0.0),
    "foam": (0, -900.0, 0.0, 0.0, 0.0),
    "equipment": (0, 1500.0, 0.0, 0.0, 0.0),
}
_T = {name: i for i, name in enumerate(_TISSUES)}
_TISSUE_TABLE = np.array([row for row in _TISSUES.values()], dtype=np.float32)
_TISSUE_LABEL = _TISSUE_TABLE[:, 0].astype(np.uint8)
# Tissues that keep their nominal value in every patient: air must stay -1000
# so background detection downstream sees the real CT air value.
_FIXED_HU = {_T["air"], _T["equipment"]}
_NO_SIGNAL_MR = {_T["air"], _T["table"], _T["foam"], _T["equipment"]}


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


@dataclass(frozen=True)
class _Grid:
    """Voxel-centre coordinates in anatomy millimetres, one broadcastable axis each.

    Anatomy millimetres are world millimetres divided by the fit-to-FOV scale
    and shifted so body + table sit centred; organs are drawn in them once.
    The anatomy's x axis points to the patient's left, so it is world x
    mirrored: RAS world +x is the patient's right (the liver's side).
    """

    x: np.ndarray  # (nx, 1, 1), +x = patient left: the mirror of RAS world x (+x = patient right)
    y: np.ndarray  # (1, ny, 1), +y = anterior; body centre at y = 0
    z: np.ndarray  # (1, 1, nz), +z = cranial
    voxel: float  # largest in-plane voxel size in anatomy mm
    half_fov_x: float  # half the field of view in x, anatomy mm
    fov_y_top: float  # top edge of the field of view in anatomy mm


@dataclass(frozen=True)
class _Body:
    """Body outline and its layers; semi-axes are per slice, shape (1, 1, nz)."""

    a: np.ndarray  # skin, left-right semi-axis
    b: np.ndarray  # skin, antero-posterior semi-axis
    fat: float  # subcutaneous fat thickness
    wall: float  # abdominal wall muscle thickness
    a_max: float
    b_max: float

    @property
    def cav_a(self) -> np.ndarray:
        return self.a - (self.fat + self.wall)

    @property
    def cav_b(self) -> np.ndarray:
        return self.b - (self.fat + self.wall)


def case_id(index: int) -> str:
    """The id of case ``index`` in every phantom cohort, whatever its seed: a cohort's ids (its patients:
    the table has no patient_id) are known from ``n_cases`` alone, before anything is drawn."""
    return f"phantom_{index:03d}"


def case_ids(n_cases: int) -> list[str]:
    """The case ids ``write_cohort`` lists for a cohort of ``n_cases``."""
    return [case_id(i) for i in range(n_cases)]


def make_case(
    index: int,
    seed: int,
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    spacing: tuple[float, float, float] = DEFAULT_SPACING,
) -> PhantomCase:
    """Generate case ``index`` of the cohort ``seed``; independent of every other case."""
    shape, spacing = _check_grid(shape, spacing)
    if index < 0 or seed < 0:
        raise ValueError(f"phantom index and seed must be >= 0, got index={index}, seed={seed}")
    # One stream per (seed, index): case i never depends on how many cases
    # were made before it. All anatomy draws come before any grid-sized draw,
    # so the same patient is drawn on every grid.
    rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
    body_params = _draw_body(rng)
    table = _draw_table(rng, body_params)
    scale, y_mid = _fit_to_fov(body_params, table, shape, spacing)
    grid = _make_grid(shape, spacing, scale, y_mid)
    body = _body_on_grid(body_params, grid)

    tissue = _paint_tissues(rng, grid, body, table)
    field = _texture(rng, grid)
    ct = _render_ct(rng, tissue, field)
    mr = _render_mr(rng, tissue, field, grid)
    label = _TISSUE_LABEL[tissue]

    affine = _ras_affine(shape, spacing)
    orientation = "RAS"
    if index % 2 == 1:
        # Half the cohort is stored LPS (DICOM-style) so every consumer has to
        # honour the affine instead of assuming an array orientation.
        ct, mr, label = (np.ascontiguousarray(np.flip(v, axis=(0, 1))) for v in (ct, mr, label))
        affine = affine @ _flip_xy(shape)
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
    tmp = table.with_name(table.name + ".part")
    tmp.write_text("case_id\timage\tlabel\tmodality\tmr\n" + "".join(sorted(rows)))
    tmp.replace(table)
    return table


# --------------------------------------------------------------------------- grid


def _check_grid(
    shape: tuple[int, int, int], spacing: tuple[float, float, float]
) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """Reject grids on which the phantom cannot be drawn, naming the bad value."""
    if len(shape) != 3 or len(spacing) != 3:
        raise ValueError(f"shape and spacing need 3 values each, got shape={shape}, spacing={spacing}")
    shape = tuple(int(n) for n in shape)
    spacing = tuple(float(s) for s in spacing)
    if min(shape[:2]) < 16 or shape[2] < 1:
        raise ValueError(f"phantom shape {shape} too small: need at least 16x16 voxels in-plane")
    if not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"phantom spacing must be positive millimetres, got {spacing}")
    return shape, spacing


def _ras_affine(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> np.ndarray:
    """Axis-aligned RAS affine whose voxel centres are centred on the world origin."""
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = -0.5 * (np.asarray(shape, dtype=np.float64) - 1.0) * np.asarray(spacing)
    return affine


def _flip_xy(shape: tuple[int, int, int]) -> np.ndarray:
    """Index map of np.flip over axes 0 and 1: stored voxel -> RAS-array voxel."""
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[0, 3] = shape[0] - 1
    flip[1, 3] = shape[1] - 1
    return flip


def _fit_to_fov(
    body: dict[str, float], table: dict[str, float], shape: tuple[int, int, int], spacing: tuple[float, float, float]
) -> tuple[float, float]:
    """Scale (world mm per anatomy mm) and the anatomy y placed at the FOV centre.

    A small requested field of view shrinks the whole patient (in z too, so
    organs keep their proportions) instead of cutting the body or the table.
    """
    fov_x = shape[0] * spacing[0]
    fov_y = shape[1] * spacing[1]
    height = 2.0 * body["b_max"] + table["gap"] + table["thick"]
    scale = min(1.0, _FOV_FILL * fov_x / (2.0 * body["a_max"]), _FOV_FILL * fov_y / height)
    # Body top at +b_max, table bottom at -(b_max + gap + thick): centre that span.
    y_mid = -0.5 * (table["gap"] + table["thick"])
    return scale, y_mid


def _make_grid(shape: tuple[int, int, int], spacing: tuple[float, float, float], scale: float, y_mid: float) -> _Grid:
    axes = []
    for n, s in zip(shape, spacing):
        world = (np.arange(n, dtype=np.float64) - 0.5 * (n - 1)) * s
        axes.append((world / scale).astype(np.float32))
    return _Grid(
        x=-axes[0].reshape(-1, 1, 1),  # anatomy +x (patient left) = world -x
        y=(axes[1] + np.float32(y_mid)).reshape(1, -1, 1),
        z=axes[2].reshape(1, 1, -1),
        voxel=max(spacing[0], spacing[1]) / scale,
        half_fov_x=0.5 * shape[0] * spacing[0] / scale,
        fov_y_top=0.5 * shape[1] * spacing[1] / scale + y_mid,
    )


# ------------------------------------------------------------------- shapes


def _ellipsoid(
    g: _Grid,
    centre: tuple[object, object, object | None],
    semi: tuple[object, object, object | None],
    angle: float = 0.0,
) -> np.ndarray:
    """Boolean mask of an ellipse (z semi-axis None: a prism along z) or ellipsoid.

    Centres and semi-axes may be per-slice arrays of shape (1, 1, nz), which is
    how every structure varies smoothly along z. ``angle`` rotates in-plane
    (radians, counter-clockwise seen from the feet: +x towards +y).
    """
    dx = g.x - centre[0]
    dy = g.y - centre[1]
    if angle:
        c, s = math.cos(angle), math.sin(angle)
        dx, dy = dx * c + dy * s, dy * c - dx * s
    r = (dx / semi[0]) ** 2 + (dy / semi[1]) ** 2
    if semi[2] is not None:
        r = r + ((g.z - centre[2]) / semi[2]) ** 2
    return r <= 1.0


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    # Plain Python floats: a NumPy float64 scalar would promote float32 volumes.
    return float(rng.uniform(lo, hi))


# ------------------------------------------------------------------- anatomy


def _draw_body(rng: np.random.Generator) -> dict[str, float]:
    a0 = _u(rng, 150.0, 180.0)  # 300-360 mm left-right
    b0 = _u(rng, 100.0, 130.0)  # 200-260 mm antero-posterior
    ta = _u(rng, -0.04, 0.04)  # slow change of girth along z
    tb = _u(rng, -0.04, 0.04)
    return {
        "a0": a0,
        "b0": b0,
        "ta": ta,
        "tb": tb,
        "fat": _u(rng, 8.0, 26.0),
        "wall": _u(rng, 8.0, 12.0),
        # tanh below keeps |girth change| < |t|, so these bound every slice.
        "a_max": a0 * (1.0 + abs(ta)),
        "b_max": b0 * (1.0 + abs(tb)),
    }


def _draw_table(rng: np.random.Generator, body: dict[str, float]) -> dict[str, float]:
    a, b = body["a_max"], body["b_max"]
    return {
        "gap": _u(rng, 3.0, 8.0),
        "thick": _u(rng, 9.0, 12.0),
        # Curvature at most b / (4 a^2): the skin then stays >= gap above the
        # plate everywhere (the ellipse rises at least b x^2 / (2 a^2)).
        "curve": b / (4.0 * a * a) * _u(rng, 0.5, 1.0),
        "half_width": 1.15 * a,
        "b_max": b,
    }


def _body_on_grid(p: dict[str, float], g: _Grid) -> _Body:
    zn = np.tanh(g.z / 150.0)
    return _Body(
        a=p["a0"] * (1.0 + p["ta"] * zn),
        b=p["b0"] * (1.0 + p["tb"] * zn),
        fat=p["fat"],
        wall=p["wall"],
        a_max=p["a_max"],
        b_max=p["b_max"],
    )


def _paint_tissues(rng: np.random.Generator, g: _Grid, body: _Body, table: dict[str, float]) -> np.ndarray:
    """Tissue id per voxel; later structures overwrite earlier ones, like organs displace fat."""
    full = (g.x.shape[0], g.y.shape[1], g.z.shape[2])
    tissue = np.zeros(full, dtype=np.uint8)
    skin = _ellipsoid(g, (0.0, 0.0, None), (body.a, body.b, None))
    inner = _ellipsoid(g, (0.0, 0.0, None), (body.a - body.fat, body.b - body.fat, None))
    cavity = _ellipsoid(g, (0.0, 0.0, None), (body.cav_a, body.cav_b, None))
    tissue[skin] = _T["fat"]
    tissue[inner] = _T["muscle"]
    tissue[cavity] = _T["viscera"]

    spine = _draw_spine(rng, body)
    dome = _diaphragm(rng, g, body)
    below = g.z <= dome  # abdomen: below the diaphragm

    _paint(tissue, _liver(rng, g, body) & below & cavity, "liver")
    _paint(tissue, _spleen(rng, g, body) & below & cavity, "spleen")
    _paint(tissue, _kidneys(rng, g, body, spine) & below & cavity, "kidney")
    gas = _bowel_gas(rng, g, body) & below & cavity & (tissue == _T["viscera"])
    _paint(tissue, gas, "gas")
    lung = cavity & ~below & (np.abs(g.x) > spine["vb_rx"] + 6.0)
    _paint(tissue, lung, "lung")
    _paint(tissue, _heart(rng, g, body, dome) & ~below & cavity, "heart")
    _paint_spine(tissue, g, body, spine, inner)
    _paint_vessels(rng, tissue, g, spine, cavity)
    _paint(tissue, _ribs(rng, g, body) & inner & ~cavity, "cortex")

    # Unlabelled objects outside the body, after the anatomy so they can never
    # overwrite it (they are drawn outside the skin anyway).
    outside = ~skin
    plate, foam = _table(g, table)
    _paint(tissue, plate & outside, "table")
    _paint(tissue, foam & outside, "foam")
    _paint(tissue, _equipment(rng, g, body) & outside, "equipment")
    return tissue


def _paint(tissue: np.ndarray, mask: np.ndarray, name: str) -> None:
    tissue[np.broadcast_to(mask, tissue.shape)] = _T[name]


def _draw_spine(rng: np.random.Generator, body: _Body) -> dict[str, float]:
    # Depth measured from under the subcutaneous fat: an obese patient's
    # spine is not closer to the skin's centre, it has more fat behind it.
    depth = float(body.b_max) - body.fat
    vb_ry = _u(rng, 14.0, 17.0)
    vb_y = -depth + 12.0 + _u(rng, 0.5, 0.58) * depth
    canal_r = _u(rng, 7.0, 9.0)
    return {
        "vb_rx": _u(rng, 18.0, 22.0),
        "vb_ry": vb_ry,
        "vb_y": vb_y,
        "canal_r": canal_r,
        "canal_y": vb_y - vb_ry - canal_r + 1.0,
        "level": _u(rng, 27.0, 33.0),  # vertebra + disc height
        "disc": _u(rng, 6.0, 9.0),
        "phase": _u(rng, 0.0, 30.0),
    }


def _diaphragm(rng: np.random.Generator, g: _Grid, body: _Body) -> np.ndarray:
    """Height of the diaphragm per (x, y): a dome, lowest at the periphery.

    Lungs lie above it and reach down furthest in the posterior recesses, so
    only the cranial slices of the default field of view show lung bases.
    """
    z_edge = _u(rng, -5.0, 10.0)
    rise = _u(rng, 45.0, 60.0)
    right_up = _u(rng, 5.0, 15.0)  # the liver holds the right dome higher
    posterior = _u(rng, 5.0, 15.0)
    rho2 = np.minimum((g.x / body.cav_a) ** 2 + (g.y / body.cav_b) ** 2, 1.0)
    dome = z_edge + rise * (1.0 - rho2)
    dome = dome + right_up * 0.5 * (1.0 - np.tanh(g.x / 20.0))
    return dome - posterior * np.clip(-g.y / body.cav_b, 0.0, 1.0)


def _liver(rng: np.random.Generator, g: _Grid, body: _Body) -> np.ndarray:
    a, b = body.cav_a, body.cav_b
    cz = _u(rng, 10.0, 30.0)
    sz = _u(rng, 80.0, 100.0)
    # Caudally only the right lobe remains, drifting right and posterior.
    caudal = np.clip((cz - g.z) / sz, 0.0, 1.0)
    cx = (-_u(rng, 0.3, 0.4) - 0.15 * caudal) * a  # patient right = -x
    cy = (_u(rng, 0.0, 0.15) - 0.15 * caudal) * b
    semi = (_u(rng, 0.55, 0.65) * a, _u(rng, 0.65, 0.8) * b, sz)
    return _ellipsoid(g, (cx, cy, cz), semi, angle=_u(rng, -0.2, 0.2))


def _spleen(rng: np.random.Generator, g: _Grid, body: _Body) -> np.ndarray:
    a, b = body.cav_a, body.cav_b
    centre = (_u(rng, 0.55, 0.65) * a, -_u(rng, 0.35, 0.5) * b, _u(rng, 15.0, 35.0))
    semi = (_u(rng, 0.3, 0.4) * b, _u(rng, 0.16, 0.22) * a, _u(rng, 40.0, 50.0))
    # Long axis along the left posterolateral wall.
    return _ellipsoid(g, centre, semi, angle=math.radians(_u(rng, 50.0, 70.0)))


def _kidneys(rng: np.random.Generator, g: _Grid, body: _Body, spine: dict[str, float]) -> np.ndarray:
    """Both kidneys beside the psoas against the posterior wall; the right one lower."""
    long_r, short_r, half_len = _u(rng, 24.0, 30.0), _u(rng, 15.0, 19.0), _u(rng, 45.0, 55.0)
    z_left = _u(rng, -25.0, -5.0)
    z_right = z_left - _u(rng, 5.0, 15.0)
    mask = np.zeros((g.x.shape[0], g.y.shape[1], g.z.shape[2]), dtype=bool)
    for side, cz in ((1.0, z_left), (-1.0, z_right)):
        # Hilum faces anteromedially, so the long axis runs anterolateral.
        theta = math.radians(_u(rng, 30.0, 50.0))
        half_x = math.hypot(long_r * math.cos(theta), short_r * math.sin(theta))
        half_y = math.hypot(long_r * math.sin(theta), short_r * math.cos(theta))
        psoas_edge = spine["vb_rx"] + 12.0 + 1.3 * 11.0
        cx0 = psoas_edge + half_x + _u(rng, 2.0, 6.0)
        a_mid = float(body.cav_a.mean())
        b_mid = float(body.cav_b.mean())
        wall_y = -b_mid * math.sqrt(max(1.0 - (cx0 / a_mid) ** 2, 0.05))
        cy = wall_y + half_y + _u(rng, 3.0, 8.0)
        # Upper poles lean medially: centre line tilted in the coronal plane.
        cx = side * (cx0 - 0.12 * (g.z - cz))
        mask |= _ellipsoid(g, (cx, cy, cz), (long_r, short_r, half_len), angle=side * theta)
    return mask


def _bowel_gas(rng: np.random.Generator, g: _Grid, body: _Body) -> np.ndarray:
    """A few gas pockets in the anterior abdomen; the first sits where no organ is."""
    a, b = body.cav_a, body.cav_b
    n = int(rng.integers(3, 7))
    mask = np.zeros((g.x.shape[0], g.y.shape[1], g.z.shape[2]), dtype=bool)
    for k in range(n):
        if k == 0:  # left lower anterior quadrant: guarantees the class in every case
            centre = (_u(rng, 0.2, 0.4) * a, _u(rng, 0.3, 0.45) * b, _u(rng, -30.0, -15.0))
            semi = (_u(rng, 12.0, 18.0), _u(rng, 10.0, 14.0), _u(rng, 15.0, 25.0))
        else:
            centre = (_u(rng, -0.35, 0.55) * a, _u(rng, 0.2, 0.6) * b, _u(rng, -50.0, 5.0))
            semi = (_u(rng, 6.0, 16.0), _u(rng, 5.0, 12.0), _u(rng, 8.0, 25.0))
        mask |= _ellipsoid(g, centre, semi)
    return mask


def _heart(rng: np.random.Generator, g: _Grid, body: _Body, dome: np.ndarray) -> np.ndarray:
    """Soft tissue resting on the central dome, so tall fields of view are not all lung."""
    a, b = body.cav_a, body.cav_b
    cz = float(dome.max()) + _u(rng, 30.0, 45.0)
    semi = (_u(rng, 0.4, 0.5) * a, _u(rng, 0.4, 0.5) * b, _u(rng, 55.0, 65.0))
    return _ellipsoid(g, (0.12 * a, 0.2 * b, cz), semi)


def _paint_spine(tissue: np.ndarray, g: _Grid, body: _Body, s: dict[str, float], inner: np.ndarray) -> None:
    """Muscles around the spine, then the vertebra: body, canal, arch, processes."""
    vb_x, vb_y = s["vb_rx"], s["vb_y"]
    # Psoas grows caudally; paraspinal muscles sit behind the arch.
    grow = 1.0 + 0.3 * np.clip(-g.z / 80.0, 0.0, 1.0)
    para_y = s["canal_y"] - 14.0
    for side in (-1.0, 1.0):
        psoas = _ellipsoid(g, (side * (vb_x + 12.0), vb_y + 2.0, None), (11.0 * grow, 10.0 * grow, None))
        _paint(tissue, psoas, "muscle")
        _paint(tissue, _ellipsoid(g, (side * 26.0, para_y, None), (22.0, 17.0, None)) & inner, "muscle")

    vb = _ellipsoid(g, (0.0, vb_y, None), (vb_x, s["vb_ry"], None))
    vb_core = _ellipsoid(g, (0.0, vb_y, None), (vb_x - 2.5, s["vb_ry"] - 2.5, None))
    arch = _ellipsoid(g, (0.0, s["canal_y"], None), (s["canal_r"] + 5.0, s["canal_r"] + 5.0, None))
    tip = max(s["canal_y"] - 32.0, -float(body.b_max) + body.fat + 6.0)
    spinous = (np.abs(g.x) <= 3.5) & (g.y <= s["canal_y"]) & (g.y >= tip)
    transverse = (np.abs(g.y - s["canal_y"]) <= 4.0) & (np.abs(g.x) <= vb_x + 10.0)
    _paint(tissue, (arch | spinous | transverse | vb) & inner, "cortex")
    _paint(tissue, vb_core, "marrow")
    # Intervertebral discs replace the whole vertebral body every level.
    disc_z = np.mod(g.z - s["phase"], s["level"]) < s["disc"]
    _paint(tissue, vb & disc_z, "disc")
    _paint(tissue, _ellipsoid(g, (0.0, s["canal_y"], None), (s["canal_r"], s["canal_r"], None)), "canal")


def _paint_vessels(
    rng: np.random.Generator, tissue: np.ndarray, g: _Grid, s: dict[str, float], cavity: np.ndarray
) -> None:
    """Aorta left-anterior of the spine, IVC to its right; both gently meandering in z."""
    r = _u(rng, 9.0, 12.0)
    ax = _u(rng, 6.0, 14.0) + 3.0 * np.sin(g.z / 60.0 + _u(rng, 0.0, 6.28))
    ay = s["vb_y"] + s["vb_ry"] + r + _u(rng, 2.0, 5.0)
    _paint(tissue, _ellipsoid(g, (ax, ay, None), (r, r, None)) & cavity, "aorta")
    vx = -_u(rng, 18.0, 26.0)
    vy = s["vb_y"] + s["vb_ry"] + _u(rng, 10.0, 14.0)
    _paint(tissue, _ellipsoid(g, (vx, vy, None), (_u(rng, 10.0, 14.0), _u(rng, 7.0, 10.0), None)) & cavity, "vein")


def _ribs(rng: np.random.Generator, g: _Grid, body: _Body) -> np.ndarray:
    """Rib cross-sections in the lateral wall, only cranially, sliding with z (ribs run obliquely)."""
    ma = body.a - body.fat - 0.5 * body.wall
    mb = body.b - body.fat - 0.5 * body.wall
    mask = np.zeros((g.x.shape[0], g.y.shape[1], g.z.shape[2]), dtype=bool)
    radial = max(2.0, 0.5 * body.wall - 1.0)
    for side in (1.0, -1.0):
        for base in (-45.0, -15.0, 15.0, 40.0):
            theta0 = math.radians(base + _u(rng, -8.0, 8.0))
            theta0 = theta0 if side > 0 else math.pi - theta0
            theta = theta0 + side * 0.004 * g.z
            z_low = _u(rng, -40.0, 10.0)
            # Thin across the wall, long along it: the rib's oblique cut.
            rib = _ellipsoid(g, (ma * np.cos(theta), mb * np.sin(theta), None), (radial, 7.0, None), angle=theta0)
            mask |= rib & (g.z > z_low)
    return mask


def _table(g: _Grid, t: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """Curved couch plate under the patient (posterior = low y) and the foam pad on it."""
    top = -t["b_max"] - t["gap"] + t["curve"] * g.x**2
    plate = (g.y <= top) & (g.y >= top - t["thick"]) & (np.abs(g.x) <= t["half_width"])
    foam = (g.y > top) & (g.y <= top + t["gap"] + 1.0) & (np.abs(g.x) <= 0.6 * t["half_width"])
    return plate, foam


def _equipment(rng: np.random.Generator, g: _Grid, body: _Body) -> np.ndarray:
    """A cable a few cm off the anterolateral skin: dense, unlabelled, not touching the body."""
    side = 1.0 if rng.random() < 0.5 else -1.0
    phi = math.radians(_u(rng, 25.0, 65.0))
    a, b = body.a_max, body.b_max
    px, py = a * math.cos(phi), b * math.sin(phi)
    nx, ny = math.cos(phi) / a, math.sin(phi) / b
    norm = math.hypot(nx, ny)
    nx, ny = nx / norm, ny / norm
    # At least ~1.5 voxels in radius so partial volume cannot wash it out.
    radius = max(3.0, 1.6 * g.voxel)
    wiggle = 3.0
    lim_x = g.half_fov_x - radius - wiggle - g.voxel
    lim_y = g.fov_y_top - radius - wiggle - g.voxel
    d_max = min((lim_x - px) / nx, (lim_y - py) / ny)
    d_min = radius + wiggle + 2.0 * g.voxel
    dist = min(max(_u(rng, 20.0, 40.0), d_min), max(d_min, d_max))
    phase = _u(rng, 0.0, 6.28)
    cx = side * (px + dist * nx) + wiggle * np.sin(g.z / 40.0 + phase)
    cy = py + dist * ny + wiggle * np.cos(g.z / 40.0 + phase)
    return _ellipsoid(g, (cx, cy, None), (radius, radius, None))


# ------------------------------------------------------------------ intensities


def _texture(rng: np.random.Generator, g: _Grid, n_waves: int = 8) -> np.ndarray:
    """Smooth unit-variance random field defined in mm, so it is grid independent."""
    field = np.zeros((g.x.shape[0], g.y.shape[1], g.z.shape[2]), dtype=np.float32)
    for _ in range(n_waves):
        d = rng.normal(size=3)
        d /= np.linalg.norm(d)
        k = 2.0 * math.pi / _u(rng, 15.0, 45.0)
        phase = _u(rng, 0.0, 2.0 * math.pi)
        field += np.cos(float(k * d[0]) * g.x + float(k * d[1]) * g.y + float(k * d[2]) * g.z + phase)
    return field * np.float32(math.sqrt(2.0 / n_waves))


def _partial_volume(volume: np.ndarray) -> np.ndarray:
    """A scanner's point spread, about a voxel wide."""
    # scipy here, not at the top: the config checks read phantom case ids at every Snakemake start,
    # and scipy.ndimage is a fifth of a second of it.
    from scipy import ndimage

    return ndimage.gaussian_filter(volume, sigma=(0.55, 0.55, 0.4), truncate=3.0)


def _render_ct(rng: np.random.Generator, tissue: np.ndarray, field: np.ndarray) -> np.ndarray:
    hu = _TISSUE_TABLE[:, 1].copy()
    offsets = np.clip(rng.normal(0.0, 4.0, size=hu.shape), -10.0, 10.0).astype(np.float32)
    offsets[list(_FIXED_HU)] = 0.0
    hu += offsets
    hu[_T["table"]] = _u(rng, 130.0, 260.0)
    noise_sd = _u(rng, 10.0, 20.0)
    ct = hu[tissue] + _TISSUE_TABLE[:, 2][tissue] * field
    ct = _partial_volume(ct)
    ct += rng.standard_normal(ct.shape, dtype=np.float32) * np.float32(noise_sd)
    return np.clip(np.rint(ct), -1024, 3071).astype(np.int16)


def _render_mr(rng: np.random.Generator, tissue: np.ndarray, field: np.ndarray, g: _Grid) -> np.ndarray:
    values = _TISSUE_TABLE[:, 3] * rng.uniform(0.9, 1.1, size=len(_TISSUES)).astype(np.float32)
    values *= np.float32(_u(rng, 0.8, 1.2))  # arbitrary MR units: per-scan gain
    texture = _TISSUE_TABLE[:, 4].copy()
    texture[list(_NO_SIGNAL_MR)] = 0.0
    # Noise at 2-4 % of the brightest tissue (fat), as in a real abdominal MR; the air then
    # carries Rician noise of that size, which a body mask must not take for tissue.
    noise_sd = _u(rng, 18.0, 36.0)
    bias = _bias_field(rng, g)
    mr = values[tissue] + texture[tissue] * field
    mr = _partial_volume(mr)
    mr *= bias
    # Rician: magnitude of a complex signal with gaussian noise in both channels,
    # which is why the background is a small positive value, never negative.
    re = mr + rng.standard_normal(mr.shape, dtype=np.float32) * np.float32(noise_sd)
    im = rng.standard_normal(mr.shape, dtype=np.float32) * np.float32(noise_sd)
    mr = np.sqrt(re * re + im * im)
    return np.clip(np.rint(mr), 0, 32767).astype(np.int16)


def _bias_field(rng: np.random.Generator, g: _Grid) -> np.ndarray:
    """Smooth multiplicative coil shading, a random quadratic within +-15-30 % (surface coils)."""
    xs = g.x / max(float(np.abs(g.x).max()), 1.0)
    ys = g.y / max(float(np.abs(g.y).max()), 1.0)
    zs = g.z / max(float(np.abs(g.z).max()), 1.0)
    terms = (xs, ys, zs, xs * xs, ys * ys, zs * zs, xs * ys, xs * zs, ys * zs)
    coefs = rng.normal(size=len(terms))
    poly = np.zeros((g.x.shape[0], g.y.shape[1], g.z.shape[2]), dtype=np.float32)
    for c, term in zip(coefs, terms):
        poly += float(c) * term
    peak = max(float(np.abs(poly).max()), 1e-6)
    return 1.0 + poly * np.float32(_u(rng, 0.15, 0.3) / peak)
