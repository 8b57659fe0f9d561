"""Fixtures of the report tests: tiny hand-made cases (see ``tests/helpers/synthetic.py``)."""

from __future__ import annotations

import pytest
from helpers import synthetic


@pytest.fixture
def synth():
    """The helper module building tiny cases, batches and results."""
    return synthetic
