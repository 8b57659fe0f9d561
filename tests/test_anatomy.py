"""The LV anatomy rule of the label maps (deepgmm.anatomy) on hand-made slices."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.path import Path as PolygonPath
from scipy.spatial import ConvexHull

from deepgmm.anatomy import (
    anatomical_labels,
    apply_anatomy,
    blood_pool,
    convex_hull_mask,
)
from deepgmm.errors import InputError
from deepgmm.evaluate.scoring import score_batch

BLOOD, MYO, EDEMA, SCAR = 1, 2, 3, 4
N = 64


def _disc(radius: float, centre: tuple[float, float] = (32, 32)) -> np.ndarray:
    yy, xx = np.mgrid[:N, :N]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius ** 2


def _probs(labels: np.ndarray, confidence: float = 0.9) -> np.ndarray:
    """``(1, 4, N, N)`` probabilities whose most likely class is ``labels`` (1..4)."""
    other = (1 - confidence) / 3
    probs = np.full((4, N, N), other, dtype=np.float32)
    for k in range(4):
        probs[k][labels == k + 1] = confidence
    return probs[None]


def _ventricle() -> tuple[np.ndarray, np.ndarray]:
    """A short-axis slice: blood pool (r < 12) inside a myocardial ring (12 <= r <= 20)."""
    roi = _disc(20)
    labels = np.where(_disc(12), BLOOD, MYO)
    return roi, np.where(roi, labels, 0)


def test_a_dark_papillary_muscle_inside_the_cavity_becomes_blood():
    roi, truth = _ventricle()
    labels = truth.copy()
    labels[_disc(3, (32, 24))] = MYO     # inside the cavity, touching nothing
    labels[_disc(2.5, (25, 32))] = SCAR  # as bright as scar in LGE, inside the cavity
    probs = _probs(labels)
    assert (apply_anatomy("none", probs, roi[None])[0] == labels).all()
    out = anatomical_labels(probs, roi[None], wall_sigma_mm=0)[0]
    np.testing.assert_array_equal(out, truth)


def test_blood_outside_the_pool_becomes_its_most_likely_wall_class():
    roi, truth = _ventricle()
    labels = truth.copy()
    stray = _disc(2, (32, 49))  # in the wall, away from the pool
    labels[stray] = BLOOD
    probs = _probs(labels)
    probs[0, SCAR - 1][stray] = 0.08   # scar is the runner-up there
    probs[0, MYO - 1][stray] = 0.01
    out = anatomical_labels(probs, roi[None], wall_sigma_mm=0)[0]
    assert (out[stray] == SCAR).all()
    assert (out[~stray] == truth[~stray]).all()



def test_with_a_predicted_roi_blood_outside_the_pool_is_left_out_of_the_lv():
    """A predicted ROI can take in the right ventricle's blood: it is not made scar."""
    roi, truth = _ventricle()
    labels = truth.copy()
    stray = _disc(2, (32, 49))
    labels[stray] = BLOOD
    probs = _probs(labels)
    probs[0, SCAR - 1][stray] = 0.08
    probs[0, MYO - 1][stray] = 0.01
    for rule in ("lv-dice", "lv"):
        given = apply_anatomy(rule, probs, roi[None], None)[0]
        predicted = apply_anatomy(rule, probs, roi[None], None, predicted_roi=True)[0]
        assert (given[stray] >= MYO).all() and (predicted[stray] == 0).all(), rule
    # lv: every other pixel as before (the smoothing still sees the whole ROI)
    np.testing.assert_array_equal(predicted[~stray], given[~stray])
    # scored through the evaluation step, as write_segmentation does with `--roi auto`
    spacing = np.ones((1, 2))
    scored = score_batch(probs, roi[None], truth[None], spacing, "none", anatomy="lv",
                         class_identity=True, predicted_roi=True)
    assert (scored.own_labels[0][stray] == 0).all()
    # the argmax rule has no cavity, so nothing is left out
    np.testing.assert_array_equal(
        apply_anatomy("none", probs, roi[None], predicted_roi=True)[0][stray], BLOOD)


def test_only_an_auto_roi_counts_as_predicted():
    from deepgmm.report.outputs import is_predicted_roi

    assert is_predicted_roi({"roi": "auto", "roi_path": "run"})
    assert not any(is_predicted_roi(r) for r in (
        {"roi": "gt"}, {"roi": "folder", "roi_path": "masks"}, {"roi": "given"}, None))


def test_smoothing_removes_an_isolated_pixel_and_keeps_a_transmural_sector():
    roi, truth = _ventricle()
    labels = truth.copy()
    yy, xx = np.mgrid[:N, :N]
    sector = (xx > 32 + 5) & (np.abs(yy - 32) < 6) & (labels == MYO)  # 11 px wide, transmural
    labels[sector] = SCAR
    lonely = (32, 32 - 16)  # one edema pixel on the other side of the wall
    labels[lonely] = EDEMA
    probs = _probs(labels, confidence=0.6)
    out = anatomical_labels(probs, roi[None], wall_sigma_mm=1.5)[0]
    assert out[lonely] == MYO
    inner = sector & ~np.roll(~sector, 2, axis=0) & ~np.roll(~sector, -2, axis=0)
    assert inner.sum() > 20 and (out[inner] == SCAR).all()
    assert (out[_disc(11.5)] == BLOOD).all()
    assert (out[~roi] == 0).all()


def test_the_kernel_is_in_millimetres():
    rng = np.random.default_rng(0)
    roi, _ = _ventricle()
    probs = rng.dirichlet(np.ones(4), size=(N, N)).transpose(2, 0, 1)[None].astype(np.float32)
    coarse = anatomical_labels(probs, roi[None], np.array([[2.0, 2.0]]), wall_sigma_mm=3.0)
    fine = anatomical_labels(probs, roi[None], np.array([[1.0, 1.0]]), wall_sigma_mm=1.5)
    np.testing.assert_array_equal(coarse, fine)
    other = anatomical_labels(probs, roi[None], np.array([[1.0, 1.0]]), wall_sigma_mm=3.0)
    assert (other != coarse).any()


def test_spacing_follows_the_axes_of_the_slice():
    rng = np.random.default_rng(2)
    roi, _ = _ventricle()
    probs = rng.dirichlet(np.ones(4), size=(N, N)).transpose(2, 0, 1)[None].astype(np.float32)
    out = anatomical_labels(probs, roi[None], np.array([[1.0, 2.0]]), wall_sigma_mm=3.0)
    transposed = anatomical_labels(probs.transpose(0, 1, 3, 2), roi.T[None],
                                   np.array([[2.0, 1.0]]), wall_sigma_mm=3.0)
    np.testing.assert_array_equal(out[0], transposed[0].T)
    swapped = anatomical_labels(probs, roi[None], np.array([[2.0, 1.0]]), wall_sigma_mm=3.0)
    assert (swapped != out).any()
    with pytest.raises(InputError, match="spacing must be"):
        anatomical_labels(probs, roi[None], np.ones((3, 2)))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 19), st.integers(0, 19)), min_size=1, max_size=12))
def test_convex_hull_matches_a_polygon_test_of_scipy_s_hull(points):
    mask = np.zeros((20, 20), dtype=bool)
    for p in points:
        mask[p] = True
    hull = convex_hull_mask(mask)
    assert (hull >= mask).all()
    pts = np.argwhere(mask)
    try:
        vertices = pts[ConvexHull(pts).vertices]
    except Exception:  # fewer than 3 points or collinear: the mask itself
        np.testing.assert_array_equal(hull, mask)
        return
    grid = np.argwhere(np.ones_like(mask))
    inside = PolygonPath(vertices).contains_points(grid, radius=1e-6) | \
        PolygonPath(vertices).contains_points(grid, radius=-1e-6)
    np.testing.assert_array_equal(hull, inside.reshape(mask.shape) | mask)


def test_blood_pool_is_the_largest_component_per_slice_and_empty_without_blood():
    labels = np.full((2, N, N), MYO)
    labels[0][_disc(8, (20, 20))] = BLOOD
    labels[0][_disc(3, (50, 50))] = BLOOD
    roi = np.ones((2, N, N), dtype=bool)
    pool = blood_pool(labels, roi)
    assert pool[0][20, 20] and not pool[0][50, 50]
    assert not pool[1].any()


def test_bad_arguments_are_refused():
    roi, labels = _ventricle()
    probs = _probs(labels)
    with pytest.raises(InputError, match="4, H, W"):
        anatomical_labels(probs[:, :3], roi[None])
    with pytest.raises(InputError, match="roi shape"):
        anatomical_labels(probs, roi[None, :10])
    with pytest.raises(InputError, match="wall_sigma_mm"):
        anatomical_labels(probs, roi[None], wall_sigma_mm=-1)
    with pytest.raises(InputError, match="spacing"):
        anatomical_labels(probs, roi[None], np.array([[0.0, 1.0]]))
    with pytest.raises(InputError, match="anatomy must be one of lv-dice, lv, none"):
        apply_anatomy("heart", probs, roi[None])


def test_scoring_applies_the_rule_only_where_the_class_order_is_known():
    roi, truth = _ventricle()
    labels = truth.copy()
    labels[_disc(3, (32, 24))] = MYO
    probs = _probs(labels)
    spacing = np.ones((1, 2))
    clusters = score_batch(probs, roi[None], truth[None], spacing, "none", anatomy="lv")
    assert clusters.anatomy == "none"
    np.testing.assert_array_equal(clusters.own_labels[0], labels)
    ordered = score_batch(probs, roi[None], truth[None], spacing, "none", anatomy="lv",
                          class_identity=True)
    assert ordered.anatomy == "lv"
    np.testing.assert_array_equal(ordered.own_labels[0], truth)
    assert ordered.dice[0, 0] == 1.0 and clusters.dice[0, 0] < 1.0
    shuffled = probs[:, [2, 0, 3, 1]]  # clusters in another order: matching restores it
    matched = score_batch(shuffled, roi[None], truth[None], spacing, "hungarian",
                          anatomy="lv")
    np.testing.assert_array_equal(matched.matched_labels[0], truth)
    np.testing.assert_array_equal(matched.own_labels[0], apply_anatomy(
        "none", shuffled, roi[None])[0])
