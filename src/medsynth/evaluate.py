"""Test-set metrics: generated vs real slices of the test split (paired mode)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from medsynth.data.slicing import CaseSlices
from medsynth.metrics.image import paired_metrics

COLUMNS = ["metric", "mean", "std", "n"]
CASE_COLUMNS = ["case_id", "sample", "slices", "ssim", "psnr", "rmse"]


def evaluate_cases(cases: Sequence[tuple[str, Path, Path]]) -> tuple[list[dict], list[dict]]:
    """``cases``: (case id, real slices.npz, generated samples.npz). Returns (summary, per-case rows)."""
    per_image: dict[str, list[np.ndarray]] = {}
    per_case = []
    for case_id, real_path, gen_path in sorted(cases):
        real = CaseSlices.load(Path(real_path))
        with np.load(gen_path) as f:
            fakes, z = f["samples"].astype(np.float32), f["z"]
        if not np.array_equal(z, real.z):
            raise ValueError(f"{gen_path}: slices {z.tolist()} do not match the real slices {real.z.tolist()} "
                             f"of {real_path}; regenerate the test set")
        real_t = torch.from_numpy(real.images)[:, None]
        for k, fake in enumerate(fakes):
            m = paired_metrics(torch.from_numpy(fake)[:, None], real_t)
            for name, values in m.items():
                per_image.setdefault(name, []).append(values.numpy())
            per_case.append({"case_id": case_id, "sample": k, "slices": len(z),
                             **{name: float(v.mean()) for name, v in m.items()}})
    if not per_image:
        raise ValueError("no test slices to evaluate: is the test split empty?")
    summary = []
    for name, chunks in per_image.items():
        values = np.concatenate(chunks)
        summary.append({"metric": name, "mean": float(values.mean()), "std": float(values.std()), "n": values.size})
    return summary, per_case
