"""The MyoPS 2020 training data (skipped when the data are not beside the project)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deepgmm.data.dataset import load_dataset
from deepgmm.data.myops import MYOPS_DEV_TEST, discover_cases
from deepgmm.data.slices import make_batch

pytestmark = pytest.mark.myops


def test_discovery_finds_25_patients(myops_root: Path):
    cases = discover_cases(myops_root)
    assert [c.case_id for c in cases] == [str(i) for i in range(101, 126)]
    assert all(c.labels is not None and c.prefix == "myops_training" for c in cases)


def test_79_all_class_slices_and_19_test_slices(myops_root: Path):
    volumes = load_dataset(myops_root)
    batch = make_batch(volumes, selection="all-classes", crop_size=(160, 160))
    assert batch.image.shape == (79, 3, 160, 160)
    assert batch.labels is not None and batch.roi.shape == (79, 160, 160)
    test = [c for c in batch.case_ids if c in MYOPS_DEV_TEST]
    assert len(test) == 19
    np.testing.assert_allclose(batch.image.mean(dim=(2, 3)), 0, atol=1e-4)
    assert batch.spacing.min() > 0.7 and batch.spacing.max() < 0.8
