"""The phantom's organs, bones, vessels, table and equipment, painted as tissues in anatomy millimetres."""

from __future__ import annotations

import math

import numpy as np

from medsynth.data.phantom.grid import BodyOutline, Grid, ellipsoid_mask, uniform
from medsynth.data.phantom.tissues import T


def paint_tissues(rng: np.random.Generator, g: Grid, body: BodyOutline, table: dict[str, float]) -> np.ndarray:
    """Tissue id per voxel; later structures overwrite earlier ones, like organs displace fat."""
    full = (g.x.shape[0], g.y.shape[1], g.z.shape[2])
    tissue = np.zeros(full, dtype=np.uint8)
    skin = ellipsoid_mask(g, (0.0, 0.0, None), (body.a, body.b, None))
    inner = ellipsoid_mask(g, (0.0, 0.0, None), (body.a - body.fat, body.b - body.fat, None))
    cavity = ellipsoid_mask(g, (0.0, 0.0, None), (body.cav_a, body.cav_b, None))
    tissue[skin] = T["fat"]
    tissue[inner] = T["muscle"]
    tissue[cavity] = T["viscera"]

    spine = _draw_spine(rng, body)
    dome = _diaphragm(rng, g, body)
    below = g.z <= dome  # abdomen: below the diaphragm

    _paint(tissue, _liver(rng, g, body) & below & cavity, "liver")
    _paint(tissue, _spleen(rng, g, body) & below & cavity, "spleen")
    _paint(tissue, _kidneys(rng, g, body, spine) & below & cavity, "kidney")
    gas = _bowel_gas(rng, g, body) & below & cavity & (tissue == T["viscera"])
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
    tissue[np.broadcast_to(mask, tissue.shape)] = T[name]


def _draw_spine(rng: np.random.Generator, body: BodyOutline) -> dict[str, float]:
    # Depth measured from under the subcutaneous fat: an obese patient's
    # spine is not closer to the skin's centre, it has more fat behind it.
    depth = float(body.b_max) - body.fat
    vb_ry = uniform(rng, 14.0, 17.0)
    vb_y = -depth + 12.0 + uniform(rng, 0.5, 0.58) * depth
    canal_r = uniform(rng, 7.0, 9.0)
    return {
        "vb_rx": uniform(rng, 18.0, 22.0),
        "vb_ry": vb_ry,
        "vb_y": vb_y,
        "canal_r": canal_r,
        "canal_y": vb_y - vb_ry - canal_r + 1.0,
        "level": uniform(rng, 27.0, 33.0),  # vertebra + disc height
        "disc": uniform(rng, 6.0, 9.0),
        "phase": uniform(rng, 0.0, 30.0),
    }


def _diaphragm(rng: np.random.Generator, g: Grid, body: BodyOutline) -> np.ndarray:
    """Height of the diaphragm per (x, y): a dome, lowest at the periphery.

    Lungs lie above it and reach down furthest in the posterior recesses, so
    only the cranial slices of the default field of view show lung bases.
    """
    z_edge = uniform(rng, -5.0, 10.0)
    rise = uniform(rng, 45.0, 60.0)
    right_up = uniform(rng, 5.0, 15.0)  # the liver holds the right dome higher
    posterior = uniform(rng, 5.0, 15.0)
    rho2 = np.minimum((g.x / body.cav_a) ** 2 + (g.y / body.cav_b) ** 2, 1.0)
    dome = z_edge + rise * (1.0 - rho2)
    dome = dome + right_up * 0.5 * (1.0 - np.tanh(g.x / 20.0))
    return dome - posterior * np.clip(-g.y / body.cav_b, 0.0, 1.0)


def _liver(rng: np.random.Generator, g: Grid, body: BodyOutline) -> np.ndarray:
    a, b = body.cav_a, body.cav_b
    cz = uniform(rng, 10.0, 30.0)
    sz = uniform(rng, 80.0, 100.0)
    # Caudally only the right lobe remains, drifting right and posterior.
    caudal = np.clip((cz - g.z) / sz, 0.0, 1.0)
    cx = (-uniform(rng, 0.3, 0.4) - 0.15 * caudal) * a  # patient right = -x
    cy = (uniform(rng, 0.0, 0.15) - 0.15 * caudal) * b
    semi = (uniform(rng, 0.55, 0.65) * a, uniform(rng, 0.65, 0.8) * b, sz)
    return ellipsoid_mask(g, (cx, cy, cz), semi, angle=uniform(rng, -0.2, 0.2))


def _spleen(rng: np.random.Generator, g: Grid, body: BodyOutline) -> np.ndarray:
    a, b = body.cav_a, body.cav_b
    centre = (uniform(rng, 0.55, 0.65) * a, -uniform(rng, 0.35, 0.5) * b, uniform(rng, 15.0, 35.0))
    semi = (uniform(rng, 0.3, 0.4) * b, uniform(rng, 0.16, 0.22) * a, uniform(rng, 40.0, 50.0))
    # Long axis along the left posterolateral wall.
    return ellipsoid_mask(g, centre, semi, angle=math.radians(uniform(rng, 50.0, 70.0)))


def _kidneys(rng: np.random.Generator, g: Grid, body: BodyOutline, spine: dict[str, float]) -> np.ndarray:
    """Both kidneys beside the psoas against the posterior wall; the right one lower."""
    long_r, short_r, half_len = uniform(rng, 24.0, 30.0), uniform(rng, 15.0, 19.0), uniform(rng, 45.0, 55.0)
    z_left = uniform(rng, -25.0, -5.0)
    z_right = z_left - uniform(rng, 5.0, 15.0)
    mask = np.zeros((g.x.shape[0], g.y.shape[1], g.z.shape[2]), dtype=bool)
    for side, cz in ((1.0, z_left), (-1.0, z_right)):
        # Hilum faces anteromedially, so the long axis runs anterolateral.
        theta = math.radians(uniform(rng, 30.0, 50.0))
        half_x = math.hypot(long_r * math.cos(theta), short_r * math.sin(theta))
        half_y = math.hypot(long_r * math.sin(theta), short_r * math.cos(theta))
        psoas_edge = spine["vb_rx"] + 12.0 + 1.3 * 11.0
        cx0 = psoas_edge + half_x + uniform(rng, 2.0, 6.0)
        a_mid = float(body.cav_a.mean())
        b_mid = float(body.cav_b.mean())
        wall_y = -b_mid * math.sqrt(max(1.0 - (cx0 / a_mid) ** 2, 0.05))
        cy = wall_y + half_y + uniform(rng, 3.0, 8.0)
        # Upper poles lean medially: centre line tilted in the coronal plane.
        cx = side * (cx0 - 0.12 * (g.z - cz))
        mask |= ellipsoid_mask(g, (cx, cy, cz), (long_r, short_r, half_len), angle=side * theta)
    return mask


def _bowel_gas(rng: np.random.Generator, g: Grid, body: BodyOutline) -> np.ndarray:
    """A few gas pockets in the anterior abdomen; the first sits where no organ is."""
    a, b = body.cav_a, body.cav_b
    n = int(rng.integers(3, 7))
    mask = np.zeros((g.x.shape[0], g.y.shape[1], g.z.shape[2]), dtype=bool)
    for k in range(n):
        if k == 0:  # left lower anterior quadrant: guarantees the class in every case
            centre = (uniform(rng, 0.2, 0.4) * a, uniform(rng, 0.3, 0.45) * b, uniform(rng, -30.0, -15.0))
            semi = (uniform(rng, 12.0, 18.0), uniform(rng, 10.0, 14.0), uniform(rng, 15.0, 25.0))
        else:
            centre = (uniform(rng, -0.35, 0.55) * a, uniform(rng, 0.2, 0.6) * b, uniform(rng, -50.0, 5.0))
            semi = (uniform(rng, 6.0, 16.0), uniform(rng, 5.0, 12.0), uniform(rng, 8.0, 25.0))
        mask |= ellipsoid_mask(g, centre, semi)
    return mask


def _heart(rng: np.random.Generator, g: Grid, body: BodyOutline, dome: np.ndarray) -> np.ndarray:
    """Soft tissue resting on the central dome, so tall fields of view are not all lung."""
    a, b = body.cav_a, body.cav_b
    cz = float(dome.max()) + uniform(rng, 30.0, 45.0)
    semi = (uniform(rng, 0.4, 0.5) * a, uniform(rng, 0.4, 0.5) * b, uniform(rng, 55.0, 65.0))
    return ellipsoid_mask(g, (0.12 * a, 0.2 * b, cz), semi)


def _paint_spine(tissue: np.ndarray, g: Grid, body: BodyOutline, s: dict[str, float], inner: np.ndarray) -> None:
    """Muscles around the spine, then the vertebra: body, canal, arch, processes."""
    vb_x, vb_y = s["vb_rx"], s["vb_y"]
    # Psoas grows caudally; paraspinal muscles sit behind the arch.
    grow = 1.0 + 0.3 * np.clip(-g.z / 80.0, 0.0, 1.0)
    para_y = s["canal_y"] - 14.0
    for side in (-1.0, 1.0):
        psoas = ellipsoid_mask(g, (side * (vb_x + 12.0), vb_y + 2.0, None), (11.0 * grow, 10.0 * grow, None))
        _paint(tissue, psoas, "muscle")
        _paint(tissue, ellipsoid_mask(g, (side * 26.0, para_y, None), (22.0, 17.0, None)) & inner, "muscle")

    vb = ellipsoid_mask(g, (0.0, vb_y, None), (vb_x, s["vb_ry"], None))
    vb_core = ellipsoid_mask(g, (0.0, vb_y, None), (vb_x - 2.5, s["vb_ry"] - 2.5, None))
    arch = ellipsoid_mask(g, (0.0, s["canal_y"], None), (s["canal_r"] + 5.0, s["canal_r"] + 5.0, None))
    tip = max(s["canal_y"] - 32.0, -float(body.b_max) + body.fat + 6.0)
    spinous = (np.abs(g.x) <= 3.5) & (g.y <= s["canal_y"]) & (g.y >= tip)
    transverse = (np.abs(g.y - s["canal_y"]) <= 4.0) & (np.abs(g.x) <= vb_x + 10.0)
    _paint(tissue, (arch | spinous | transverse | vb) & inner, "cortex")
    _paint(tissue, vb_core, "marrow")
    # Intervertebral discs replace the whole vertebral body every level.
    disc_z = np.mod(g.z - s["phase"], s["level"]) < s["disc"]
    _paint(tissue, vb & disc_z, "disc")
    _paint(tissue, ellipsoid_mask(g, (0.0, s["canal_y"], None), (s["canal_r"], s["canal_r"], None)), "canal")


def _paint_vessels(
    rng: np.random.Generator, tissue: np.ndarray, g: Grid, s: dict[str, float], cavity: np.ndarray
) -> None:
    """Aorta left-anterior of the spine, IVC to its right; both gently meandering in z."""
    r = uniform(rng, 9.0, 12.0)
    ax = uniform(rng, 6.0, 14.0) + 3.0 * np.sin(g.z / 60.0 + uniform(rng, 0.0, 6.28))
    ay = s["vb_y"] + s["vb_ry"] + r + uniform(rng, 2.0, 5.0)
    _paint(tissue, ellipsoid_mask(g, (ax, ay, None), (r, r, None)) & cavity, "aorta")
    vx = -uniform(rng, 18.0, 26.0)
    vy = s["vb_y"] + s["vb_ry"] + uniform(rng, 10.0, 14.0)
    _paint(tissue, ellipsoid_mask(g, (vx, vy, None), (uniform(rng, 10.0, 14.0), uniform(rng, 7.0, 10.0), None)) & cavity, "vein")


def _ribs(rng: np.random.Generator, g: Grid, body: BodyOutline) -> np.ndarray:
    """Rib cross-sections in the lateral wall, only cranially, sliding with z (ribs run obliquely)."""
    ma = body.a - body.fat - 0.5 * body.wall
    mb = body.b - body.fat - 0.5 * body.wall
    mask = np.zeros((g.x.shape[0], g.y.shape[1], g.z.shape[2]), dtype=bool)
    radial = max(2.0, 0.5 * body.wall - 1.0)
    for side in (1.0, -1.0):
        for base in (-45.0, -15.0, 15.0, 40.0):
            theta0 = math.radians(base + uniform(rng, -8.0, 8.0))
            theta0 = theta0 if side > 0 else math.pi - theta0
            theta = theta0 + side * 0.004 * g.z
            z_low = uniform(rng, -40.0, 10.0)
            # Thin across the wall, long along it: the rib's oblique cut.
            rib = ellipsoid_mask(g, (ma * np.cos(theta), mb * np.sin(theta), None), (radial, 7.0, None), angle=theta0)
            mask |= rib & (g.z > z_low)
    return mask


def _table(g: Grid, t: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """Curved couch plate under the patient (posterior = low y) and the foam pad on it."""
    top = -t["b_max"] - t["gap"] + t["curve"] * g.x**2
    plate = (g.y <= top) & (g.y >= top - t["thick"]) & (np.abs(g.x) <= t["half_width"])
    foam = (g.y > top) & (g.y <= top + t["gap"] + 1.0) & (np.abs(g.x) <= 0.6 * t["half_width"])
    return plate, foam


def _equipment(rng: np.random.Generator, g: Grid, body: BodyOutline) -> np.ndarray:
    """A cable a few cm off the anterolateral skin: dense, unlabelled, not touching the body."""
    side = 1.0 if rng.random() < 0.5 else -1.0
    phi = math.radians(uniform(rng, 25.0, 65.0))
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
    dist = min(max(uniform(rng, 20.0, 40.0), d_min), max(d_min, d_max))
    phase = uniform(rng, 0.0, 6.28)
    cx = side * (px + dist * nx) + wiggle * np.sin(g.z / 40.0 + phase)
    cy = py + dist * ny + wiggle * np.cos(g.z / 40.0 + phase)
    return ellipsoid_mask(g, (cx, cy, None), (radius, radius, None))
