"""medsynth: synthetic medical images from semantic label maps (OASIS GAN)."""


def __getattr__(name: str) -> str:
    # The version is looked up when asked for (checkpoints, cards, tables): importlib.metadata costs
    # 25 ms, and the config checks import this package at every Snakemake start.
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("medsynth")
        except PackageNotFoundError:  # running from a source tree that was not installed
            return "0.0.0+unknown"
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
