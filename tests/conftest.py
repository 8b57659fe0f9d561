"""Shared fixtures: a tiny phantom data set (built once per session) and the MyoPS data."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from deepgmm.types import CaseVolume, SliceBatch

PHANTOM_CASES = 4
PHANTOM_SEED = 0
PHANTOM_CROP = (64, 64)
"""Crop of ``phantom_batch``: 96 mm at 1.5 mm, enough for the phantom's left ventricle."""

MYOPS_ROOT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "myops2020"


@pytest.fixture(scope="session")
def phantom_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A MyoPS-layout folder with 4 phantom cases (ids 101-104), 128 x 128 x 3 voxels."""
    from deepgmm.data.phantom import write_phantom

    return write_phantom(tmp_path_factory.mktemp("phantom"), n_cases=PHANTOM_CASES,
                         seed=PHANTOM_SEED)


@pytest.fixture(scope="session")
def phantom_volumes(phantom_root: Path) -> list[CaseVolume]:
    """The phantom cases loaded (shared by the session: do not modify them in place)."""
    from deepgmm.data.dataset import load_dataset

    return load_dataset(phantom_root)


@pytest.fixture
def phantom_batch(phantom_volumes: list[CaseVolume]) -> SliceBatch:
    """All-class slices of the phantom (12 slices, 3 sequences, 64 x 64 crops, labels)."""
    from deepgmm.data.slices import make_batch

    return make_batch(phantom_volumes, crop_size=PHANTOM_CROP, require_labels=True)


@pytest.fixture(scope="session")
def myops_root() -> Path:
    """The MyoPS 2020 training data beside the project, or skip."""
    root = MYOPS_ROOT.resolve()
    if not (root / "train25").is_dir():
        pytest.skip(f"MyoPS 2020 data not found at {root} (expected train25/ and "
                    f"train25_myops_gd/ there)")
    return root


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run with ``n`` intra-op torch threads, then restore the previous setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread: tiny networks and tensors run many times faster on one thread
    than on two on a busy 2-core machine (thread hand-offs dominate)."""
    with torch_threads(1):
        yield


@pytest.fixture
def two_torch_threads() -> Iterator[None]:
    """Two intra-op threads (what the worker-thread fitting splits into workers)."""
    with torch_threads(2):
        yield
