"""Fixtures of the evaluation tests: the tiny hand-made cases of ``tests/report``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest


@pytest.fixture
def synth():
    """The helper module building tiny cases, batches and results."""
    name = "deepgmm_tests_synthetic"
    if name not in sys.modules:
        path = Path(__file__).parent.parent / "report" / "_synthetic.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]
