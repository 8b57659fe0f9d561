"""The expected-Dice decision (deepgmm.decision): hand-computed slices, an exhaustive search
as the slow-but-obvious reference, properties, and the ``lv-dice`` anatomy rule."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deepgmm.anatomy import anatomical_labels, apply_anatomy
from deepgmm.decision import dice_objective, expected_dice_labels
from deepgmm.errors import InputError


def _row(p_second: list[float]) -> np.ndarray:
    """``(1, 2, 1, n)``: one slice of n pixels, class 1 with ``p_second``, class 0 the rest."""
    p = np.asarray(p_second, dtype=np.float64)
    return np.stack([1 - p, p])[None, :, None, :]


def _exhaustive(probs: np.ndarray, mask: np.ndarray) -> float:
    """The largest objective over every labelling of one slice's masked pixels."""
    n_c = probs.shape[1]
    inside = np.flatnonzero(mask[0])
    best = -np.inf
    for combo in itertools.product(range(n_c), repeat=len(inside)):
        labels = np.zeros(mask[0].size, dtype=np.int64)
        labels[inside] = combo
        best = max(best, float(dice_objective(probs, labels.reshape(mask.shape), mask)[0]))
    return best


def test_the_objective_by_hand():
    probs = _row([0.4] * 5)
    mask = np.ones((1, 1, 5), dtype=bool)
    # argmax: class 0 everywhere: D_0 = 2 * 3 / (5 + 3); class 1 absent: 0.6 ** 5
    argmax = np.zeros((1, 1, 5), dtype=np.int64)
    assert dice_objective(probs, argmax, mask)[0] == pytest.approx(0.75 + 0.6 ** 5)
    # two pixels to class 1: D_1 = 2 * 0.8 / (2 + 2), D_0 = 2 * 1.8 / (3 + 3)
    two = np.array([[[1, 1, 0, 0, 0]]])
    assert dice_objective(probs, two, mask)[0] == pytest.approx(0.4 + 0.6)


def test_a_small_uncertain_class_gets_the_pixels_where_it_is_nearly_as_likely():
    # class 1 is the less likely class of every pixel, so argmax never labels it; the
    # labelling of largest expected Dice gives it the two likeliest pixels (hand-computed:
    # D_1 + D_0 = 2 * 0.87 / (2 + 1.67) + 2 * 2.2 / (3 + 3.33) = 1.169, more than argmax's
    # 2 * 3.33 / 8.33 + prod(1 - p) = 0.800 + 0.121)
    probs = _row([0.45, 0.42, 0.40, 0.30, 0.10])
    mask = np.ones((1, 1, 5), dtype=bool)
    labels = expected_dice_labels(probs, mask)
    np.testing.assert_array_equal(labels, [[[1, 1, 0, 0, 0]]])
    assert dice_objective(probs, labels, mask)[0] == pytest.approx(
        2 * 0.87 / 3.67 + 2 * 2.2 / 6.33, abs=1e-3)
    assert dice_objective(probs, np.zeros_like(labels), mask)[0] == pytest.approx(
        2 * 3.33 / 8.33 + 0.55 * 0.58 * 0.6 * 0.7 * 0.9, abs=1e-3)
    assert dice_objective(probs, labels, mask)[0] == pytest.approx(_exhaustive(probs, mask))


def test_a_class_more_likely_absent_than_found_is_left_out():
    # an expected size of 0.05 pixels: prod(1 - p) = 0.95 beats any set the class could get
    probs = _row([0.01] * 5)
    mask = np.ones((1, 1, 5), dtype=bool)
    np.testing.assert_array_equal(expected_dice_labels(probs, mask), 0)
    # argmax labels a likely-absent class on one pixel: the decision drops it
    probs = _row([0.55, 0.0, 0.0, 0.0, 0.0])
    probs[0, 1, 0, 1:] = 1e-6
    probs[0, 0] = 1 - probs[0, 1]
    assert np.argmax(probs, axis=1)[0, 0, 0] == 1
    labels = expected_dice_labels(probs, mask)
    assert dice_objective(probs, labels, mask)[0] >= dice_objective(
        probs, np.argmax(probs, axis=1), mask)[0]
    assert dice_objective(probs, labels, mask)[0] == pytest.approx(_exhaustive(probs, mask))


def test_outside_the_mask_is_minus_one_and_slices_are_independent():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet([1.0, 1.0, 1.0], size=(2, 6, 6)).transpose(0, 3, 1, 2)
    mask = np.zeros((2, 6, 6), dtype=bool)
    mask[:, 1:5, 1:5] = True
    labels = expected_dice_labels(probs, mask)
    assert (labels[~mask] == -1).all() and set(np.unique(labels[mask])) <= {0, 1, 2}
    alone = expected_dice_labels(probs[1:], mask[1:])
    np.testing.assert_array_equal(labels[1:], alone)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2 ** 31 - 1), n_classes=st.integers(2, 3),
       concentration=st.floats(0.2, 3.0))
def test_never_worse_than_argmax_and_as_good_as_exhaustive_search_on_tiny_slices(
        seed, n_classes, concentration):
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet([concentration] * n_classes, size=(1, 2, 3)).transpose(0, 3, 1, 2)
    mask = rng.random((1, 2, 3)) < 0.9
    labels = expected_dice_labels(probs, mask)
    score = dice_objective(probs, labels, mask)[0]
    assert score >= dice_objective(probs, np.argmax(probs, axis=1), mask)[0] - 1e-12
    # coordinate ascent finds a local optimum; on slices this small it is the global one
    # in nearly every case, and never far from it
    assert score >= _exhaustive(probs, mask) - 0.25


def test_bad_input_is_refused():
    mask = np.ones((1, 1, 5), dtype=bool)
    with pytest.raises(InputError, match="mask shape"):
        expected_dice_labels(_row([0.2] * 5), mask[:, :, :4])
    with pytest.raises(InputError, match="B, C, H, W"):
        expected_dice_labels(np.ones((2, 5)), mask)
    bad = _row([0.2] * 5)
    bad[0, 0, 0, 2] = np.nan
    with pytest.raises(InputError, match="finite"):
        expected_dice_labels(bad, mask)


def _ring_slice() -> tuple[np.ndarray, np.ndarray]:
    """``(1, 4, 48, 48)`` probabilities and ROI: blood pool r < 10 inside a wall r <= 16
    whose right half is edema with 0.45 against myocardium's 0.5 (argmax: myocardium)."""
    yy, xx = np.mgrid[:48, :48]
    r = np.hypot(yy - 24, xx - 24)
    roi = r <= 16
    probs = np.zeros((4, 48, 48))
    probs[0] = np.where(r < 10, 0.97, 0.01)
    wall = roi & (r >= 10)
    right = wall & (xx > 24)
    probs[1] = np.where(r < 10, 0.01, np.where(right, 0.5, 0.96))
    probs[2] = np.where(right, 0.45, 0.02)
    probs[3] = 1 - probs[:3].sum(axis=0)
    return probs[None], roi[None]


def test_lv_dice_keeps_the_blood_pool_and_labels_the_uncertain_wall_for_dice():
    probs, roi = _ring_slice()
    lv = anatomical_labels(probs, roi)
    lv_dice = apply_anatomy("lv-dice", probs, roi)
    np.testing.assert_array_equal(lv == 1, lv_dice == 1)        # the same blood pool
    np.testing.assert_array_equal(lv, apply_anatomy("lv", probs, roi))
    assert not (lv == 3).any()                                   # argmax: no edema
    right_wall = (lv_dice[0] >= 2) & (np.arange(48)[None, :] > 26)
    assert (lv_dice[0][right_wall] == 3).mean() > 0.5            # the decision: edema
    # the wall as the decision labels the normalised smoothed wall probabilities
    wall = (lv == 2)
    from deepgmm.anatomy import _smoothed_wall
    smoothed = _smoothed_wall(probs.astype(np.float32), roi, np.ones((1, 2)), 2.0)
    shares = smoothed / smoothed.sum(axis=1, keepdims=True).clip(1e-30)
    expected = expected_dice_labels(shares, wall) + 2
    np.testing.assert_array_equal(lv_dice[wall], expected[wall])
    with pytest.raises(InputError, match="wall_decision"):
        anatomical_labels(probs, roi, wall_decision="vote")
