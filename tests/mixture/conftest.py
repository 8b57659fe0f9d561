"""One torch thread for the mixture tests: their tensors are tiny, and on a busy 2-core
machine a second intra-op thread makes them many times slower (threads wait on each other),
not faster. The previous setting is restored after each test."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _one_thread_per_test(one_torch_thread: None) -> None:
    """Every test here runs with the shared ``one_torch_thread`` fixture."""
