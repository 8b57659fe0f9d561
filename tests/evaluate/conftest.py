"""Fixtures of the evaluation tests: the tiny hand-made cases of ``tests/helpers``."""

from __future__ import annotations

import pytest
from helpers import synthetic


@pytest.fixture
def synth():
    """The helper module building tiny cases, batches and results."""
    return synthetic
