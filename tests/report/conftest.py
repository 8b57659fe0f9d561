"""Fixtures of the report tests: tiny hand-made cases (see ``_synthetic.py``)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest


def load_synthetic():
    """Import ``tests/report/_synthetic.py`` by path (shared with ``tests/evaluate``)."""
    name = "deepgmm_tests_synthetic"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(
            "_synthetic.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture
def synth():
    """The helper module building tiny cases, batches and results."""
    return load_synthetic()
