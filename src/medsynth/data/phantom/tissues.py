"""The phantom's tissues: finer than its labels, each with its CT and MR intensity."""

from __future__ import annotations

import numpy as np


# Tissues are finer than labels: several tissues share a label (fat and the
# mesentery are both "body"; cortical and cancellous bone are both "bone") and
# some have none (table, foam, cable). Intensities are assigned per tissue.
# Columns: label, CT HU, CT texture sd, MR T1-like value, MR texture sd.
# A negative MR texture sd anti-correlates MR with CT: the mesentery is fat
# (dark on CT, bright on T1) where the texture is low and bowel where high.
TISSUES: dict[str, tuple[int, float, float, float, float]] = {
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
T = {name: i for i, name in enumerate(TISSUES)}
TISSUE_TABLE = np.array([row for row in TISSUES.values()], dtype=np.float32)
TISSUE_LABEL = TISSUE_TABLE[:, 0].astype(np.uint8)
# Tissues that keep their nominal value in every patient: air must stay -1000
# so background detection downstream sees the real CT air value.
FIXED_HU = {T["air"], T["equipment"]}
NO_SIGNAL_MR = {T["air"], T["table"], T["foam"], T["equipment"]}
