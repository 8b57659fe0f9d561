"""The public API: every exported name resolves, and ``import deepgmm`` stays light."""

from __future__ import annotations

import subprocess
import sys

import pytest

import deepgmm


@pytest.mark.parametrize("name", sorted(set(deepgmm.__all__) - {"__version__"}))
def test_exported_names_resolve(name: str) -> None:
    assert getattr(deepgmm, name) is not None


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_thing"):
        deepgmm.no_such_thing  # noqa: B018


def test_import_does_not_load_torch() -> None:
    code = "import sys, deepgmm; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
