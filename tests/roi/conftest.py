"""Shared fixtures of the ROI tests: a tiny ROI run trained on the phantom (once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers.roi_settings import TINY_SETTINGS


@pytest.fixture(scope="session")
def tiny_run(phantom_volumes, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ROI run trained for two epochs on the phantom cases 101-103 (one torch thread)."""
    from deepgmm.roi.train import train_roi

    run = tmp_path_factory.mktemp("roi") / "run"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_roi(phantom_volumes[:3], run, settings=TINY_SETTINGS, progress=False)
    finally:
        torch.set_num_threads(before)
    return run


@pytest.fixture(scope="session")
def learnt_run(phantom_volumes, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ROI run that has learnt the LV of phantom case 101 (40 epochs, no augmentation)."""
    from deepgmm.roi.model import RoiSettings
    from deepgmm.roi.train import train_roi

    settings = RoiSettings(spacing_mm=3.0, crop=64, channels=(4, 8, 16), epochs=40,
                           batch_size=3, augment=False, lr=1e-2, checkpoint_every=40)
    run = tmp_path_factory.mktemp("roi") / "learnt"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_roi(phantom_volumes[:1], run, settings=settings, progress=False)
    finally:
        torch.set_num_threads(before)
    return run
