"""Seconds per volume for preprocess + slice (+ PNG views) of one CT.

    python bench/preprocess.py                  # an AutoPET-sized phantom CT (400 x 400 x 300, int16)
    python bench/preprocess.py --real           # also the real CT in ../shared/data (if present)

The volume is written as .nii.gz first; timing starts at reading it, as the
pipeline does. Each variant runs ``--repeat`` times and the fastest run is
reported: on a shared machine the minimum is the stable number.
"""

from __future__ import annotations

import argparse
from concurrent.futures import ThreadPoolExecutor
import tempfile
import time
from pathlib import Path

import numpy as np

from medsynth.data.labels import LabelTable
from medsynth.data.phantom import PHANTOM_LABELS, make_case
from medsynth.data.preprocess import PreprocessSettings, preprocess_case
from medsynth.data.slicing import SliceSettings, slice_case, write_pngs
from medsynth.io.nifti import load_volume, save_volume

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "totalseg-example"


def best_of(repeat: int, func, *args) -> None:
    """Run ``func`` ``repeat`` times; print the fastest run's line."""
    lines = sorted((func(*args) for _ in range(repeat)), key=lambda r: r[0])
    print(lines[0][1], flush=True)


def run_case(name: str, image: Path, label: Path, table: LabelTable, spacing_xy: float | None, size: int,
             work: Path) -> tuple[float, str]:
    t0 = time.perf_counter()
    preprocess_case(name, image, label, work / name, table, PreprocessSettings("CT", spacing_xy))
    t1 = time.perf_counter()
    pre = work / name
    with ThreadPoolExecutor(3) as pool:  # as workflow/scripts/slice.py does
        img_a, lab_a, msk_a = pool.map(lambda a: load_volume(*a).array, [
            (pre / "image.nii.gz", np.float32), (pre / "label.nii.gz", np.uint8), (pre / "mask.nii.gz", np.uint8)])
    slices = slice_case(img_a, lab_a, msk_a, SliceSettings(size=size))
    slices.save(pre / "slices.npz")
    t2 = time.perf_counter()
    write_pngs(name, slices, pre / "png")
    t3 = time.perf_counter()
    n = len(slices.z)
    return t3 - t0, (f"{name}: {load_volume(image).array.shape} -> {n} slices of {size}x{size}: "
                     f"preprocess {t1 - t0:.2f} s, slice {t2 - t1:.2f} s, PNG {t3 - t2:.2f} s; "
                     f"total {t3 - t0:.2f} s per volume, {n / (t3 - t0):.0f} slices/s")


def straightforward(image: Path, label: Path, out: Path, spacing_xy: float, size: int) -> tuple[float, str]:
    """The same job written plainly: float64 volumes, a per-slice loop, PIL PNGs at default settings.

    Per axial slice: resample in-plane (linear image, nearest labels), threshold,
    open with a disk, keep the largest component, fill holes, window to [-1, 1],
    crop to ``size`` around the body, write image and label PNGs.
    """
    import nibabel as nib
    from PIL import Image
    from scipy import ndimage

    t0 = time.perf_counter()
    img = nib.as_closest_canonical(nib.load(str(image))).get_fdata()
    lab = nib.as_closest_canonical(nib.load(str(label))).get_fdata()
    zoom = np.sqrt((nib.load(str(image)).affine[:3, :2] ** 2).sum(axis=0)) / spacing_xy
    r = max(1, int(6.0 / spacing_xy))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    disk = xx**2 + yy**2 <= r * r
    out.mkdir(parents=True, exist_ok=True)
    kept = 0
    for z in range(img.shape[2]):
        s = ndimage.zoom(img[:, :, z], zoom, order=1)
        lz = ndimage.zoom(lab[:, :, z], zoom, order=0)
        body = ndimage.binary_opening(s > -500, structure=disk)
        comp, n = ndimage.label(body)
        if n == 0 or not (lz > 0).any():
            continue
        sizes = ndimage.sum(body, comp, range(1, n + 1))
        body = ndimage.binary_fill_holes(comp == 1 + int(np.argmax(sizes)))
        s = np.where(body, np.clip(s, -1000, 1000) / 1000.0, -1.0)
        cx, cy = (np.array(np.nonzero(body)).mean(axis=1) - size / 2).astype(int)
        pad = np.pad(s, size, constant_values=-1.0)[cx + size : cx + 2 * size, cy + size : cy + 2 * size]
        lpad = np.pad(lz, size)[cx + size : cx + 2 * size, cy + size : cy + 2 * size]
        Image.fromarray(((pad + 1) * 127.5).astype(np.uint8)).save(out / f"img_{z:03d}.png")
        Image.fromarray(lpad.astype(np.uint8)).save(out / f"lab_{z:03d}.png")
        kept += 1
    dt = time.perf_counter() - t0
    return dt, (f"straightforward per-slice float64 loop (same steps): {kept} slices in {dt:.2f} s per volume, "
                f"{kept / dt:.0f} slices/s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", type=int, nargs=3, default=[400, 400, 300])
    ap.add_argument("--spacing", type=float, nargs=3, default=[0.977, 0.977, 2.0])
    ap.add_argument("--spacing-xy", type=float, default=1.5, help="target in-plane spacing (mm)")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--real", action="store_true", help="also time the real CT from ../shared/data")
    ap.add_argument("--repeat", type=int, default=3, help="runs per variant; the fastest is reported")
    args = ap.parse_args()
    table = LabelTable.from_config([{"name": n, "values": [v]} for v, n in sorted(PHANTOM_LABELS.items())])
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        case = make_case(0, seed=0, shape=tuple(args.shape), spacing=tuple(args.spacing))
        save_volume(work / "ct.nii.gz", case.ct, case.affine)
        save_volume(work / "label.nii.gz", case.label, case.affine)
        best_of(args.repeat, run_case, "phantom", work / "ct.nii.gz", work / "label.nii.gz", table, args.spacing_xy,
                args.size, work)
        best_of(args.repeat, straightforward, work / "ct.nii.gz", work / "label.nii.gz", work / "naive",
                args.spacing_xy, args.size)
        if args.real:
            if not (REAL / "ct.nii.gz").is_file():
                print(f"real CT not found at {REAL}; skipped")
                return
            values = np.unique(load_volume(REAL / "label.nii.gz", np.int32).array)
            real_table = LabelTable.from_config(
                [{"name": "background", "values": [0]}, {"name": "anatomy", "values": [int(v) for v in values if v]}])
            best_of(args.repeat, run_case, "real", REAL / "ct.nii.gz", REAL / "label.nii.gz", real_table, None, 128,
                    work)


if __name__ == "__main__":
    main()
