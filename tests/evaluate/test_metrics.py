"""Dice and HD95 against hand-computed cases and a slow scipy reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage

from deepgmm.errors import InputError
from deepgmm.evaluate.metrics import dice_per_class, hd95_per_class


def test_dice_hand_computed():
    pred = np.array([[[1, 1, 0, 4],
                      [2, 2, 0, 0]]])
    truth = np.array([[[0, 1, 1, 0],
                       [2, 2, 2, 0]]])
    d = dice_per_class(pred, truth)
    assert d.shape == (1, 4)
    # blood: |P∩T| = 1, |P| + |T| = 4; myocardium: 2*2/(2+3); edema absent; scar only in pred
    np.testing.assert_allclose(d[0, [0, 1, 3]], [0.5, 0.8, 0.0])
    assert np.isnan(d[0, 2])


def test_dice_batched_slices_are_independent():
    a = np.array([[1, 2], [3, 4]])
    b = np.array([[1, 1], [3, 0]])
    pred = np.stack([a, a])
    truth = np.stack([a, b])
    d = dice_per_class(pred, truth)
    np.testing.assert_allclose(d[0], [1.0, 1.0, 1.0, 1.0])
    # blood 2*1/(1+2), myocardium 0/(1+0), edema 1, scar 0/(1+0)
    np.testing.assert_allclose(d[1], [2 / 3, 0.0, 1.0, 0.0])


@settings(max_examples=30, deadline=None)
@given(arrays(np.int64, (2, 5, 6), elements=st.integers(0, 4)),
       arrays(np.int64, (2, 5, 6), elements=st.integers(0, 4)))
def test_dice_properties(pred, truth):
    d = dice_per_class(pred, truth)
    np.testing.assert_array_equal(d, dice_per_class(truth, pred))
    present = np.stack([((pred == c) | (truth == c)).any(axis=(1, 2)) for c in range(1, 5)], 1)
    np.testing.assert_array_equal(np.isnan(d), ~present)
    assert np.all((d[present] >= 0) & (d[present] <= 1))
    self_d = dice_per_class(truth, truth)
    np.testing.assert_array_equal(np.isnan(self_d), ~np.stack(
        [(truth == c).any(axis=(1, 2)) for c in range(1, 5)], 1))
    assert np.all(self_d[~np.isnan(self_d)] == 1.0)


def test_dice_bad_input():
    with pytest.raises(InputError, match="same shape"):
        dice_per_class(np.zeros((1, 2, 2), int), np.zeros((1, 2, 3), int))
    with pytest.raises(InputError, match=r"\(B, H, W\)"):
        dice_per_class(np.zeros((2, 2), int), np.zeros((2, 2), int))
    with pytest.raises(InputError, match="integer"):
        dice_per_class(np.zeros((1, 2, 2)), np.zeros((1, 2, 2), int))


def test_hd95_single_pixels_with_anisotropic_spacing():
    pred = np.zeros((2, 6, 6), dtype=np.int64)
    truth = np.zeros((2, 6, 6), dtype=np.int64)
    pred[0, 0, 0] = 1
    truth[0, 0, 3] = 1        # 3 pixels along W at 0.5 mm
    pred[1, 0, 0] = 2
    truth[1, 4, 0] = 2        # 4 pixels along H at 2 mm
    truth[1, 5, 5] = 3        # edema only in the truth
    hd = hd95_per_class(pred, truth, np.array([[2.0, 0.5], [2.0, 0.5]]))
    assert hd.shape == (2, 4)
    assert hd[0, 0] == pytest.approx(1.5)
    assert hd[1, 1] == pytest.approx(8.0)
    assert np.isinf(hd[1, 2])
    assert np.isnan(hd[0, 1]) and np.isnan(hd[0, 3]) and np.isnan(hd[1, 3])


def test_hd95_ignores_the_top_five_percent():
    # a 1-pixel-wide line of 20 pixels, the prediction adds one outlier 5 pixels away:
    # Hausdorff (max) is 5, the 95th percentile of the 21 distances is 0
    truth = np.zeros((1, 8, 24), dtype=np.int64)
    truth[0, 0, 2:22] = 1
    pred = truth.copy()
    pred[0, 5, 2] = 1
    assert hd95_per_class(pred, truth)[0, 0] == pytest.approx(0.0)


def _reference_hd95(p: np.ndarray, t: np.ndarray, spacing: np.ndarray) -> float:
    """Slow reference: boundary pixels by erosion, distances by scipy's EDT."""
    def edges(m):
        return m & ~ndimage.binary_erosion(m)
    ep, et = edges(p), edges(t)
    d_pt = ndimage.distance_transform_edt(~et, sampling=spacing)[ep]
    d_tp = ndimage.distance_transform_edt(~ep, sampling=spacing)[et]
    return max(np.percentile(d_pt, 95), np.percentile(d_tp, 95))


def test_hd95_matches_scipy_reference_on_random_blobs():
    rng = np.random.default_rng(3)
    noise = ndimage.gaussian_filter(rng.standard_normal((4, 2, 20, 24)), (0, 0, 2, 2))
    pred = np.where(noise[:, 0] > 0.05, 1, 0) + np.where(noise[:, 0] < -0.12, 2, 0)
    truth = np.where(noise[:, 1] > 0.0, 1, 0) + np.where(noise[:, 1] < -0.1, 2, 0)
    spacing = rng.uniform(0.5, 2.0, (4, 2))
    hd = hd95_per_class(pred, truth, spacing)
    for b in range(4):  # the reference is per slice and class by design
        for c in (1, 2):
            ref = _reference_hd95(pred[b] == c, truth[b] == c, spacing[b])
            assert hd[b, c - 1] == pytest.approx(ref, rel=1e-5, abs=1e-5)


def test_hd95_bad_spacing():
    x = np.zeros((2, 3, 3), dtype=np.int64)
    with pytest.raises(InputError, match="spacing"):
        hd95_per_class(x, x, np.ones((3, 2)))
    with pytest.raises(InputError, match="positive"):
        hd95_per_class(x, x, np.array([[1.0, 0.0], [1.0, 1.0]]))


def test_hd95_unchanged_by_cutting_to_the_foreground():
    # small blobs in a large image, one touching the image border: the cut to the
    # foreground box must give the full-image reference distances
    rng = np.random.default_rng(5)
    pred = np.zeros((2, 60, 50), dtype=np.int64)
    truth = np.zeros_like(pred)
    blobs = ndimage.gaussian_filter(rng.standard_normal((2, 2, 12, 10)), (0, 0, 1.5, 1.5))
    pred[:, 0:12, 20:30] = np.where(blobs[:, 0] > 0, 1, 0)
    truth[:, 1:13, 21:31] = np.where(blobs[:, 1] > -0.05, 1, 0)
    truth[1, 40:44, 5:9] = 2
    pred[1, 41:45, 5:8] = 2
    spacing = np.array([[0.7, 1.3], [1.1, 0.9]])
    hd = hd95_per_class(pred, truth, spacing)
    for b in range(2):
        ref = _reference_hd95(pred[b] == 1, truth[b] == 1, spacing[b])
        assert hd[b, 0] == pytest.approx(ref, rel=1e-5, abs=1e-5)
    assert hd[1, 1] == pytest.approx(_reference_hd95(pred[1] == 2, truth[1] == 2, spacing[1]),
                                     rel=1e-5)
    assert np.isnan(hd[0, 1])
