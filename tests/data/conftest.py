"""Helpers for the data tests: tiny NIfTI files and MyoPS-layout folders."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

WriteNii = Callable[..., Path]


@pytest.fixture
def write_nii(tmp_path: Path) -> WriteNii:
    """``write_nii(name, array, affine=None, dtype=None) -> Path`` under ``tmp_path``."""

    def write(name: str, array: np.ndarray, affine: np.ndarray | None = None,
              dtype: type | None = None) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        arr = np.asarray(array) if dtype is None else np.asarray(array).astype(dtype)
        img = nib.Nifti1Image(arr, np.eye(4) if affine is None else affine)
        img.set_qform(img.affine, code=1)
        nib.save(img, str(path))
        return path

    return write


@pytest.fixture
def phantom_copy(phantom_root: Path, tmp_path: Path) -> Path:
    """A private copy of the session phantom that a test may damage."""
    dest = tmp_path / "copy"
    shutil.copytree(phantom_root, dest)
    return dest
