"""Overlap and boundary metrics per class and slice: Dice, the 95th-percentile Hausdorff
distance and the average symmetric surface distance (ASSD).

Label maps hold class indices (0 background, 1 blood, 2 myocardium, 3 edema, 4 scar); every
metric is computed for the foreground classes 1..n_classes, one value per slice and class.

Conventions for classes that are missing:

- Dice is NaN where the class is absent from both the prediction and the truth (0/0), and
  0 where it is present in exactly one of them. Summaries use ``nanmean``.
- HD95 and ASSD are NaN where the class is absent from both, and ``inf`` where it is present in
  exactly one of them (no surface to measure to). Summaries average the finite values.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from deepgmm.errors import InputError


def _check_maps(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate two ``(B, H, W)`` integer label maps of equal shape and return them."""
    pred = np.asarray(pred)
    truth = np.asarray(truth)
    if pred.ndim != 3 or truth.ndim != 3:
        raise InputError(f"label maps must be (B, H, W), got pred {pred.shape} and "
                         f"truth {truth.shape}")
    if pred.shape != truth.shape:
        raise InputError(f"pred {pred.shape} and truth {truth.shape} must have the same shape")
    for name, arr in (("pred", pred), ("truth", truth)):
        if not np.issubdtype(arr.dtype, np.integer) and arr.dtype != np.bool_:
            raise InputError(f"{name} must hold integer class indices, got dtype {arr.dtype}")
    return pred, truth


def one_hot(labels: np.ndarray, n_classes: int = 4) -> np.ndarray:
    """Foreground one-hot masks of a label map.

    Args:
        labels: ``(B, H, W)`` integer class indices.
        n_classes: number of foreground classes C; classes are 1..C.

    Returns:
        ``(B, C, H, W)`` bool, channel c is ``labels == c + 1``.
    """
    classes = np.arange(1, n_classes + 1).reshape(1, n_classes, 1, 1)
    return np.asarray(labels)[:, None] == classes


def dice_per_class(pred: np.ndarray, truth: np.ndarray, n_classes: int = 4) -> np.ndarray:
    """Dice coefficient of each foreground class on each slice.

    ``Dice = 2 |P ∩ T| / (|P| + |T|)`` with P, T the pixels of the class in the prediction
    and the truth.

    Args:
        pred: ``(B, H, W)`` integer predicted class indices (0 background).
        truth: ``(B, H, W)`` integer true class indices (0 background).
        n_classes: number of foreground classes C (classes 1..C are scored).

    Returns:
        ``(B, C)`` float64 Dice in [0, 1]; NaN where the class is absent from both maps.
    """
    pred, truth = _check_maps(pred, truth)
    p = one_hot(pred, n_classes)
    t = one_hot(truth, n_classes)
    inter = (p & t).sum(axis=(2, 3), dtype=np.float64)
    total = p.sum(axis=(2, 3), dtype=np.float64) + t.sum(axis=(2, 3), dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, 2.0 * inter / total, np.nan)


def _check_spacing(spacing: np.ndarray | None, n_slices: int) -> np.ndarray:
    """Return a ``(B, 2)`` float64 spacing array, ones when ``spacing`` is None."""
    if spacing is None:
        return np.ones((n_slices, 2))
    spacing = np.asarray(spacing, dtype=np.float64)
    if spacing.shape == (2,):
        spacing = np.broadcast_to(spacing, (n_slices, 2))
    if spacing.shape != (n_slices, 2):
        raise InputError(f"spacing must be (B, 2) = ({n_slices}, 2) in mm, got {spacing.shape}")
    if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise InputError(f"spacing must be positive and finite, got {spacing.tolist()}")
    return spacing


def foreground_box(masks: np.ndarray, margin: int = 1) -> tuple[slice, slice]:
    """Bounding box of all foreground of a stack of masks, widened by ``margin`` pixels.

    Boundaries (a mask minus its erosion) and distances between boundaries do not change
    when the image is cut to this box: every pixel within ``margin`` of the foreground is
    kept, and where the box meets the image border the border stays where it was.

    Args:
        masks: ``(..., H, W)`` bool.
        margin: pixels of background kept around the foreground.

    Returns:
        ``(rows, cols)`` slices into H and W; the whole image when there is no foreground.
    """
    h, w = masks.shape[-2:]
    any_rows = masks.reshape(-1, h, w).any(axis=(0, 2))
    any_cols = masks.reshape(-1, h, w).any(axis=(0, 1))
    if not any_rows.any():
        return slice(0, h), slice(0, w)
    r = np.flatnonzero(any_rows)
    c = np.flatnonzero(any_cols)
    return (slice(max(r[0] - margin, 0), min(r[-1] + margin + 1, h)),
            slice(max(c[0] - margin, 0), min(c[-1] + margin + 1, w)))


def hd95_per_class(pred: np.ndarray, truth: np.ndarray, spacing: np.ndarray | None = None,
                   n_classes: int = 4) -> np.ndarray:
    """95th-percentile symmetric Hausdorff distance of each foreground class on each slice.

    Computed by MONAI's ``compute_hausdorff_distance`` (``percentile=95``, Euclidean,
    per-slice ``spacing``): the 95th percentile of the distances from each boundary pixel
    of one mask to the boundary of the other, taken in both directions, the larger of the
    two. MONAI loops over slices and classes internally (one distance transform per image),
    so the stack is first cut to the bounding box of all foreground
    (:func:`foreground_box`), which leaves every distance unchanged, and made contiguous
    (label maps sliced out of ``(X, Y, Z)`` volumes are strided views, which MONAI's
    per-image torch operations handle slowly).

    Args:
        pred: ``(B, H, W)`` integer predicted class indices (0 background).
        truth: ``(B, H, W)`` integer true class indices (0 background).
        spacing: ``(B, 2)`` (or ``(2,)``) in-plane pixel spacing in mm along H and W;
            None means 1 mm.
        n_classes: number of foreground classes C (classes 1..C are scored).

    Returns:
        ``(B, C)`` float64 distances in mm; NaN where the class is absent from both maps,
        ``inf`` where it is present in exactly one.
    """
    from monai.metrics import compute_hausdorff_distance

    return _surface_metric(pred, truth, spacing, n_classes, partial(
        compute_hausdorff_distance, include_background=True, percentile=95))


def assd_per_class(pred: np.ndarray, truth: np.ndarray, spacing: np.ndarray | None = None,
                   n_classes: int = 4) -> np.ndarray:
    """Average symmetric surface distance of each foreground class on each slice.

    Computed by MONAI's ``compute_average_surface_distance`` (``symmetric=True``,
    Euclidean, per-slice ``spacing``): the mean of the distances from every boundary pixel
    of either mask to the other mask's boundary. Same cropping and conventions as
    :func:`hd95_per_class`.

    Args:
        pred: ``(B, H, W)`` integer predicted class indices (0 background).
        truth: ``(B, H, W)`` integer true class indices (0 background).
        spacing: ``(B, 2)`` (or ``(2,)``) in-plane pixel spacing in mm; None means 1 mm.
        n_classes: number of foreground classes C.

    Returns:
        ``(B, C)`` float64 distances in mm; NaN where the class is absent from both maps,
        ``inf`` where it is present in exactly one.
    """
    from monai.metrics import compute_average_surface_distance

    return _surface_metric(pred, truth, spacing, n_classes, partial(
        compute_average_surface_distance, include_background=True, symmetric=True))


def _surface_metric(pred: np.ndarray, truth: np.ndarray, spacing: np.ndarray | None,
                    n_classes: int, metric: Callable[..., Any]) -> np.ndarray:
    """A MONAI surface distance of each class on each slice, ``(B, C)`` float64 in mm.

    The one-hot maps are cropped to the box holding every foreground pixel of the batch
    (distances do not change, the distance transforms get cheaper); NaN where the class
    is absent from both maps, ``inf`` where it is present in exactly one.
    """
    pred, truth = _check_maps(pred, truth)
    spacing = _check_spacing(spacing, pred.shape[0])
    if pred.shape[0] == 0:
        return np.zeros((0, n_classes))
    p = one_hot(pred, n_classes)
    t = one_hot(truth, n_classes)
    in_p = p.any(axis=(2, 3))
    in_t = t.any(axis=(2, 3))
    box = foreground_box(p | t)
    p = np.ascontiguousarray(p[..., box[0], box[1]], dtype=np.float32)
    t = np.ascontiguousarray(t[..., box[0], box[1]], dtype=np.float32)
    with warnings.catch_warnings():
        # MONAI warns about empty masks and a deprecated argument of its own; both cases
        # are handled below.
        warnings.simplefilter("ignore")
        dist = metric(p, t, spacing=[list(sp) for sp in spacing])
    dist = np.asarray(dist.cpu().numpy(), dtype=np.float64)
    return np.where(in_p & in_t, dist, np.where(in_p | in_t, np.inf, np.nan))
