"""Image-quality metrics with explicit data ranges."""

# Raise by one whenever a validation metric's definition changes (what it measures, its
# region, its reference): a run whose history was computed under another version
# recomputes it from its EMA snapshots (medsynth.train.validation) instead of mixing the two.
# 2: body Dice on the filled tissue outline, W1 inside the label body on both sides; 3: paired validation's KID
# pairs each fake with the real image of its label map (a perfect generator read below 0)
METRICS_VERSION = 3

# Which way is better, for selection and for marking the best step in plots.
# ssim/psnr/rmse need a pixel-aligned reference (paired mode); body_dice and
# intensity_w1 need none, so unpaired experiments have metrics to select by.
# fid/kid need the pretrained Inception weights (NaN without them).
DIRECTIONS: dict[str, str] = {"fid": "min", "kid": "min", "ssim": "max", "psnr": "max", "rmse": "min",
                              "body_dice": "max", "intensity_w1": "min"}


def is_better(metric: str, value: float, than: float | None) -> bool:
    if value != value:  # NaN: not computed, never better
        return False
    if than is None:
        return True
    return value > than if DIRECTIONS[metric] == "max" else value < than

# The FID Inception weights' file (perceptual.WEIGHT_URLS): here, torch-free, for the workflow's resources too.
INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"
