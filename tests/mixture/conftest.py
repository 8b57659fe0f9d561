"""One torch thread for the mixture tests: their tensors are tiny, and on a busy 2-core
machine a second intra-op thread makes them many times slower (threads wait on each other),
not faster. The previous setting is restored after each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
