"""PNG views of 2D slices for people (training reads the .npz stores, not these)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def display_view(slice_xy: np.ndarray) -> np.ndarray:
    """RAS [x, y] slice -> screen rows/cols in radiological convention.

    Anterior at the top, the patient's right on the screen's left.
    """
    return np.ascontiguousarray(np.asarray(slice_xy).T[::-1, :])


def unit_to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint((np.asarray(image, dtype=np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def save_png(path: str | Path, array: np.ndarray) -> Path:
    """Grey uint8 PNG; compress_level=1 because PNG zlib at level 6+ dominates slicing time."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8), mode="L").save(path, compress_level=1)
    return path


def load_png(path: str | Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img)
