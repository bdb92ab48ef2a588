"""medsynth: synthetic medical images from semantic label maps (OASIS GAN)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("medsynth")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"
