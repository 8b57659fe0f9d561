"""Data layer: NIfTI I/O, the MyoPS layout, slice batches, μ_data and the built-in phantom.

Flow: files -> :func:`load_dataset` / :func:`load_explicit` (``CaseVolume``) ->
:func:`make_batch` (``SliceBatch``: cropped, normalised slices) -> methods ->
:func:`uncrop` + :func:`save_nifti` for outputs in the input's space.
"""

from deepgmm.data.dataset import load_case, load_dataset, load_explicit
from deepgmm.data.myops import CaseFiles, discover_cases, labels_to_classes
from deepgmm.data.nifti import check_same_space, load_nifti, save_nifti
from deepgmm.data.slices import crop, make_batch, select_slices, uncrop

__all__ = [
    "CaseFiles",
    "check_same_space",
    "crop",
    "discover_cases",
    "labels_to_classes",
    "load_case",
    "load_dataset",
    "load_explicit",
    "load_nifti",
    "make_batch",
    "save_nifti",
    "select_slices",
    "uncrop",
]
