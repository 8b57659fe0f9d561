"""Settings of the tiny ROI networks the tests train."""

from __future__ import annotations

from deepgmm.roi.model import RoiSettings

TINY_SETTINGS = RoiSettings(spacing_mm=3.0, crop=64, channels=(4, 8, 16), epochs=2,
                            batch_size=6, checkpoint_every=1, seed=0)
"""A network small enough to train in seconds: 64 px of 3 mm hold the phantom's 192 mm."""
