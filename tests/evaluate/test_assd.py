"""ASSD per class and slice against a SciPy reference (edges by erosion, Euclidean
distance transforms with the pixel spacing)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from deepgmm.evaluate.metrics import assd_per_class


def _edges(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask)


def reference_assd(a: np.ndarray, b: np.ndarray, spacing: tuple[float, float]) -> float:
    ea, eb = _edges(a), _edges(b)
    d_to_b = ndimage.distance_transform_edt(~eb, sampling=spacing)
    d_to_a = ndimage.distance_transform_edt(~ea, sampling=spacing)
    return float((d_to_b[ea].sum() + d_to_a[eb].sum()) / (ea.sum() + eb.sum()))


def test_assd_matches_scipy_on_shifted_blobs():
    rng = np.random.default_rng(3)
    truth = np.zeros((3, 40, 40), dtype=np.int64)
    yy, xx = np.mgrid[:40, :40]
    for b in range(3):
        r = 6 + 2 * b
        truth[b][(yy - 20) ** 2 + (xx - 20) ** 2 < r ** 2] = 1
        truth[b][(yy - 20) ** 2 + (xx - 20) ** 2 < (r - 3) ** 2] = 2
    pred = np.roll(truth, shift=(0, 2, 1), axis=(0, 1, 2))
    pred[rng.random(pred.shape) < 0.02] = 0
    spacing = np.array([[1.25, 1.25], [1.0, 2.0], [0.8, 0.8]])
    got = assd_per_class(pred, truth, spacing, n_classes=2)
    for b in range(3):
        for k in (1, 2):
            assert got[b, k - 1] == pytest.approx(
                reference_assd(pred[b] == k, truth[b] == k, tuple(spacing[b])), rel=1e-6)
    assert got[0, 0] > 0


def test_assd_conventions_for_missing_classes():
    truth = np.zeros((1, 8, 8), dtype=np.int64)
    truth[0, 2:5, 2:5] = 1
    pred = truth.copy()
    got = assd_per_class(pred, truth, None, n_classes=3)
    assert got[0, 0] == 0.0 and np.isnan(got[0, 1]) and np.isnan(got[0, 2])
    pred[0, 6, 6] = 2
    assert np.isinf(assd_per_class(pred, truth, None, n_classes=2)[0, 1])
