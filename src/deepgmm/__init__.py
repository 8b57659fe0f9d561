"""deepgmm: unsupervised segmentation of multi-sequence MR images with deep Gaussian mixtures."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
