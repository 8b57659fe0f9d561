"""How good a predicted ROI is against the ground truth: Dice and crop-centre error.

Shapes: masks are ``(X, Y, Z)`` bool on the case's grid.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from deepgmm.errors import InputError
from deepgmm.types import CaseVolume


def _pair(predicted: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p, t = np.asarray(predicted, dtype=bool), np.asarray(truth, dtype=bool)
    if p.shape != t.shape or p.ndim != 3:
        raise InputError(f"masks must be two (X, Y, Z) arrays of one shape, got {p.shape} "
                         f"and {t.shape}")
    return p, t


def case_dice(predicted: np.ndarray, truth: np.ndarray) -> float:
    """3-D Dice of two masks; 1.0 when both are empty."""
    p, t = _pair(predicted, truth)
    total = int(p.sum()) + int(t.sum())
    return 1.0 if total == 0 else 2.0 * int((p & t).sum()) / total


def slice_dice(predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """``(Z,)`` Dice of every slice; NaN where both masks are empty in that slice."""
    p, t = _pair(predicted, truth)
    inter = (p & t).sum(axis=(0, 1)).astype(np.float64)
    total = (p.sum(axis=(0, 1)) + t.sum(axis=(0, 1))).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, 2.0 * inter / total, np.nan)


def centre_error_mm(volume: CaseVolume, predicted: np.ndarray,
                    truth: np.ndarray | None = None,
                    zooms: Sequence[float] | None = None) -> float:
    """In-plane distance in mm between the crop centres the two ROIs give.

    The crop centre is :func:`deepgmm.data.slices.crop_center`'s: the ROI's centre of mass
    in its middle non-empty slice, rounded to a voxel. ``truth`` defaults to the case's ROI,
    ``zooms`` to its spacing. NaN when the predicted ROI is empty.
    """
    from deepgmm.data.slices import crop_center

    truth = volume.roi if truth is None else truth
    p, t = _pair(predicted, truth)
    if not p.any():
        return float("nan")
    spacing = np.asarray((zooms or volume.zooms)[:2], dtype=np.float64)
    c_pred = np.asarray(crop_center(dataclasses.replace(volume, roi=p)), dtype=np.float64)
    c_true = np.asarray(crop_center(dataclasses.replace(volume, roi=t)), dtype=np.float64)
    return float(np.linalg.norm((c_pred - c_true) * spacing))
