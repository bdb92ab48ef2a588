"""Where the phantom is drawn: voxel centres in anatomy millimetres, the body outline, simple shapes."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


# Fraction of the field of view that body + table may use in x and y; the rest
# is margin, so that cropping or augmentation downstream never cuts the body.
_FOV_FILL = 0.9


@dataclass(frozen=True)
class Grid:
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
class BodyOutline:
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


def check_grid(
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


def ras_affine(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> np.ndarray:
    """Axis-aligned RAS affine whose voxel centres are centred on the world origin."""
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = -0.5 * (np.asarray(shape, dtype=np.float64) - 1.0) * np.asarray(spacing)
    return affine


def flip_xy(shape: tuple[int, int, int]) -> np.ndarray:
    """Index map of np.flip over axes 0 and 1: stored voxel -> RAS-array voxel."""
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[0, 3] = shape[0] - 1
    flip[1, 3] = shape[1] - 1
    return flip


def fit_to_fov(
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


def make_grid(shape: tuple[int, int, int], spacing: tuple[float, float, float], scale: float, y_mid: float) -> Grid:
    axes = []
    for n, s in zip(shape, spacing):
        world = (np.arange(n, dtype=np.float64) - 0.5 * (n - 1)) * s
        axes.append((world / scale).astype(np.float32))
    return Grid(
        x=-axes[0].reshape(-1, 1, 1),  # anatomy +x (patient left) = world -x
        y=(axes[1] + np.float32(y_mid)).reshape(1, -1, 1),
        z=axes[2].reshape(1, 1, -1),
        voxel=max(spacing[0], spacing[1]) / scale,
        half_fov_x=0.5 * shape[0] * spacing[0] / scale,
        fov_y_top=0.5 * shape[1] * spacing[1] / scale + y_mid,
    )


def ellipsoid_mask(
    g: Grid,
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


def uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    # Plain Python floats: a NumPy float64 scalar would promote float32 volumes.
    return float(rng.uniform(lo, hi))


def draw_body(rng: np.random.Generator) -> dict[str, float]:
    a0 = uniform(rng, 150.0, 180.0)  # 300-360 mm left-right
    b0 = uniform(rng, 100.0, 130.0)  # 200-260 mm antero-posterior
    ta = uniform(rng, -0.04, 0.04)  # slow change of girth along z
    tb = uniform(rng, -0.04, 0.04)
    return {
        "a0": a0,
        "b0": b0,
        "ta": ta,
        "tb": tb,
        "fat": uniform(rng, 8.0, 26.0),
        "wall": uniform(rng, 8.0, 12.0),
        # tanh below keeps |girth change| < |t|, so these bound every slice.
        "a_max": a0 * (1.0 + abs(ta)),
        "b_max": b0 * (1.0 + abs(tb)),
    }


def draw_table(rng: np.random.Generator, body: dict[str, float]) -> dict[str, float]:
    a, b = body["a_max"], body["b_max"]
    return {
        "gap": uniform(rng, 3.0, 8.0),
        "thick": uniform(rng, 9.0, 12.0),
        # Curvature at most b / (4 a^2): the skin then stays >= gap above the
        # plate everywhere (the ellipse rises at least b x^2 / (2 a^2)).
        "curve": b / (4.0 * a * a) * uniform(rng, 0.5, 1.0),
        "half_width": 1.15 * a,
        "b_max": b,
    }


def body_on_grid(p: dict[str, float], g: Grid) -> BodyOutline:
    zn = np.tanh(g.z / 150.0)
    return BodyOutline(
        a=p["a0"] * (1.0 + p["ta"] * zn),
        b=p["b0"] * (1.0 + p["tb"] * zn),
        fat=p["fat"],
        wall=p["wall"],
        a_max=p["a_max"],
        b_max=p["b_max"],
    )
