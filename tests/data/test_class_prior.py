"""Class statistics for the mixture prior: hand-computed values, the μ_data draw, JSON form."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from deepgmm.data.class_prior import ClassPrior, compute_class_prior
from deepgmm.data.mu_data import compute_mu_data, draw_slices
from deepgmm.errors import InputError
from deepgmm.types import SliceBatch


def _batch(image: np.ndarray, labels: np.ndarray) -> SliceBatch:
    b = image.shape[0]
    return SliceBatch(image=torch.from_numpy(image.astype(np.float32)),
                      roi=torch.from_numpy(labels > 0), labels=torch.from_numpy(labels),
                      case_ids=["1"] * b, slice_indices=list(range(b)),
                      crop_origins=np.zeros((b, 2), np.int64),
                      full_shapes=np.tile(image.shape[2:], (b, 1)),
                      sequences=("A", "B"), spacing=np.ones((b, 2)))


LABELS = np.array([[[0, 1, 1, 2], [3, 4, 4, 4]],
                   [[1, 1, 1, 2], [2, 3, 4, 0]]], dtype=np.int64)  # (2, 2, 4)


def _image() -> np.ndarray:
    a = np.array([[[9, 1, 3, 5], [2, 0, 2, 4]],
                  [[2, 4, 6, 1], [3, 7, 5, 9]]], dtype=np.float64)  # sequence A
    return np.stack([a, 2.0 * a + 1.0], axis=1)  # (2, 2, 2, 4); B = 2A + 1


def test_hand_computed_statistics():
    floor = 0.5
    prior = compute_class_prior(_batch(_image(), LABELS), n_slices=2, seed=0, var_floor=floor)
    # blood: slice 0 {1, 3} var 1; slice 1 {2, 4, 6} var 8/3; weights 2 and 3 pixels
    blood_a = (2 * np.log(1 + floor) + 3 * np.log(8 / 3 + floor)) / 5
    # B = 2A + 1 has four times the variance
    blood_b = (2 * np.log(4 + floor) + 3 * np.log(32 / 3 + floor)) / 5
    np.testing.assert_allclose(prior.log_variances[0], [blood_a, blood_b], rtol=1e-12)
    # myocardium: slice 0 {5} var 0; slice 1 {1, 3} var 1
    myo_a = (1 * np.log(floor) + 2 * np.log(1 + floor)) / 3
    np.testing.assert_allclose(prior.log_variances[1, 0], myo_a, rtol=1e-12)
    # edema: one pixel in each slice, variance 0: the floor
    np.testing.assert_allclose(prior.log_variances[2], np.log(floor), rtol=1e-12)
    # scar: slice 0 {0, 2, 4} var 8/3; slice 1 {5} var 0
    scar_a = (3 * np.log(8 / 3 + floor) + np.log(floor)) / 4
    np.testing.assert_allclose(prior.log_variances[3, 0], scar_a, rtol=1e-12)
    # ROI: 7 pixels in each slice; per-slice proportions averaged
    expected_w = (np.array([2, 1, 1, 3]) / 7 + np.array([3, 2, 1, 1]) / 7) / 2
    np.testing.assert_allclose(prior.weights, expected_w, rtol=1e-12)
    np.testing.assert_allclose(prior.weights.sum(), 1.0)
    # means are μ_data of the same draw
    np.testing.assert_array_equal(prior.means, compute_mu_data(_batch(_image(), LABELS),
                                                               n_slices=2, seed=0))


def test_uses_the_mu_data_draw():
    """With 1 of 2 slices drawn, the statistics are those of μ_data's slice alone."""
    batch = _batch(_image(), LABELS)
    drawn = set()
    for seed in range(6):
        (chosen,) = draw_slices(2, 1, seed)
        drawn.add(int(chosen))
        prior = compute_class_prior(batch, n_slices=1, seed=seed)
        single = compute_class_prior(_batch(_image()[chosen:chosen + 1],
                                            LABELS[chosen:chosen + 1]), n_slices=1)
        np.testing.assert_array_equal(prior.log_variances, single.log_variances)
        np.testing.assert_array_equal(prior.weights, single.weights)
        np.testing.assert_array_equal(prior.means, compute_mu_data(batch, 1, seed))
    assert drawn == {0, 1}  # both slices were drawn by some seed: the check bites


def test_dict_round_trip_and_bad_input():
    prior = compute_class_prior(_batch(_image(), LABELS), n_slices=2)
    back = ClassPrior.from_dict(json.loads(json.dumps(prior.to_dict())), 4, 2)
    np.testing.assert_array_equal(back.log_variances, prior.log_variances)
    np.testing.assert_array_equal(back.weights, prior.weights)
    np.testing.assert_array_equal(back.means, prior.means)
    doc = prior.to_dict()
    with pytest.raises(InputError, match="shape"):
        ClassPrior.from_dict(doc, 4, 3)
    with pytest.raises(InputError, match="must hold"):
        ClassPrior.from_dict({"means": doc["means"]}, 4, 2)
    with pytest.raises(InputError, match="sum to 1"):
        ClassPrior.from_dict({**doc, "weights": [0.5, 0.5, 0.5, 0.5]}, 4, 2)
    with pytest.raises(InputError, match="NaN"):
        ClassPrior.from_dict({**doc, "log_variances": [[float("nan")] * 2] * 4}, 4, 2)
    with pytest.raises(InputError, match="absent"):
        compute_class_prior(_batch(_image(), np.where(LABELS == 3, 1, LABELS)), n_slices=2)
