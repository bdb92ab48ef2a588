"""Image-quality metrics with explicit data ranges."""

# Which way is better, for selection and for marking the best step in plots.
DIRECTIONS: dict[str, str] = {"ssim": "max", "psnr": "max", "rmse": "min"}


def is_better(metric: str, value: float, than: float | None) -> bool:
    if than is None:
        return True
    return value > than if DIRECTIONS[metric] == "max" else value < than
