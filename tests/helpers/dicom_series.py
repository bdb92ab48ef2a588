"""Writes small DICOM CT series for the tests: stored integers with a rescale slope and
intercept, in an oblique orientation, one file per slice, file names not in slice order."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from medsynth.io.dicom import keep_locale

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def oblique_direction(yaw_deg: float = 20.0, pitch_deg: float = 10.0) -> np.ndarray:
    """A rotation (columns: the voxel axes in LPS) that is neither axial nor any other standard plane."""
    a, b = np.deg2rad(yaw_deg), np.deg2rad(pitch_deg)
    yaw = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    pitch = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return yaw @ pitch


def write_series(folder: Path, hu: np.ndarray, spacing: Sequence[float] = (0.8, 0.9, 2.5),
                 direction: np.ndarray | None = None, origin: Sequence[float] = (10.0, -20.0, 30.0),
                 series_uid: str = "1.2.826.0.1.3680043.2.1125.7.1", modality: str = "CT",
                 slope: float = 2.0, intercept: float = -1024.0, positions: np.ndarray | None = None,
                 tag_overrides: dict[int, dict[str, str]] | None = None) -> list[Path]:
    """Write ``hu`` ((x, y, z), HU) as one file per z slice under ``folder``; the LPS geometry is
    ``direction`` @ diag(``spacing``) from ``origin`` unless ``positions`` (z, 3) replaces the slices'
    positions. ``tag_overrides`` sets tags of single slices (by z). Returns the files."""
    with keep_locale():  # GDCM would leave the process in the C locale
        folder.mkdir(parents=True, exist_ok=True)
        direction = np.eye(3) if direction is None else np.asarray(direction, dtype=np.float64)
        image = sitk.GetImageFromArray(np.asarray(hu, dtype=np.float32).transpose(2, 1, 0))
        image.SetSpacing(tuple(float(s) for s in spacing))
        image.SetDirection(direction.ravel().tolist())
        image.SetOrigin(tuple(float(o) for o in origin))
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        n = hu.shape[2]
        files = []
        for k in range(n):
            sl = image[:, :, k]
            pos = positions[k] if positions is not None else image.TransformIndexToPhysicalPoint((0, 0, k))
            tags = {
                "0008|0060": modality, "0008|0016": CT_IMAGE_STORAGE, "0020|000e": series_uid,
                "0020|000d": series_uid + ".0", "0008|0018": f"{series_uid}.{k + 1}", "0020|0013": str(k + 1),
                "0020|0037": "\\".join(f"{v:.10f}" for v in (*direction[:, 0], *direction[:, 1])),
                "0020|0032": "\\".join(f"{v:.10f}" for v in pos),
                "0018|0050": f"{spacing[2]:g}", "0028|1053": f"{slope:g}", "0028|1052": f"{intercept:g}",
                "0028|0100": "16", "0028|0101": "16", "0028|0102": "15", "0028|0103": "1",
                **(tag_overrides or {}).get(k, {}),
            }
            for key, value in tags.items():
                sl.SetMetaData(key, value)
            path = folder / f"IM{(k * 7) % n:04d}.dcm"  # file names in another order than the slices
            writer.SetFileName(str(path))
            writer.Execute(sl)
            files.append(path)
    return files


def lps_geometry_affine(spacing: Sequence[float], direction: np.ndarray, origin: Sequence[float]) -> np.ndarray:
    """The RAS+ affine of a volume written by ``write_series`` (x and y of LPS negated)."""
    affine = np.eye(4)
    affine[:3, :3] = np.asarray(direction) @ np.diag(spacing)
    affine[:3, 3] = origin
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine


def set_transfer_syntax(file: Path, uid: str) -> None:
    """Rewrite the TransferSyntaxUID (0002,0010) of ``file``'s meta header, keeping the header's lengths
    right; the data set stays as written (so a compressed syntax claims pixel data that is not)."""
    import struct

    data = bytearray(file.read_bytes())
    value = uid.encode("ascii") + (b"\0" if len(uid) % 2 else b"")
    at = 132
    while True:
        group, element = struct.unpack_from("<HH", data, at)
        assert group == 0x0002, "no TransferSyntaxUID in the meta header"
        vr = bytes(data[at + 4 : at + 6])
        long_vr = vr in (b"OB", b"OW", b"UN", b"SQ", b"UT")
        head = 12 if long_vr else 8
        length = struct.unpack_from("<I" if long_vr else "<H", data, at + (8 if long_vr else 6))[0]
        if element == 0x0010:
            data[at + 6 : at + 8] = struct.pack("<H", len(value))
            data[at + head : at + head + length] = value
            break
        at += head + length
    # (0002,0000) group length: the meta header's bytes after it.
    assert struct.unpack_from("<HH", data, 132) == (0x0002, 0x0000)
    old = struct.unpack_from("<I", data, 140)[0]
    struct.pack_into("<I", data, 140, old + len(value) - length)
    file.write_bytes(bytes(data))
