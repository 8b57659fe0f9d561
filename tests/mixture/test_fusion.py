"""Fusion of class probabilities with the labelled slices' class Gaussians."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from deepgmm.data.mu_data import compute_mu_data, draw_slices
from deepgmm.errors import InputError
from deepgmm.mixture.fusion import (
    PROB_FLOOR,
    ClassGaussians,
    fit_class_gaussians,
    fuse_probabilities,
)
from deepgmm.types import SliceBatch


def _gaussians(means: list, covs: list) -> ClassGaussians:
    means_a = np.asarray(means, dtype=np.float64)
    return ClassGaussians(means=means_a, covariances=np.asarray(covs, dtype=np.float64),
                          n_pixels=np.full(len(means_a), 100))


def test_hand_computed_two_classes_one_sequence() -> None:
    # classes N(0, 1) and N(2, 1); the network says 0.8 / 0.2 everywhere.
    g = _gaussians([[0.0], [2.0]], [[[1.0]], [[1.0]]])
    image = torch.tensor([1.0, 2.0, 0.0]).reshape(1, 1, 1, 3)
    probs = torch.tensor([[0.8, 0.8, 0.8], [0.2, 0.2, 0.2]]).reshape(1, 2, 1, 3)
    roi = torch.ones(1, 1, 3, dtype=torch.bool)
    out = fuse_probabilities(probs, image, roi, g)[0, :, 0]
    # x = 1: equal likelihoods, the network's answer stays
    assert out[:, 0].tolist() == pytest.approx([0.8, 0.2], abs=1e-6)
    # x = 2: likelihood ratio N(2; 0, 1) / N(2; 2, 1) = exp(-2)
    a, b = 0.8 * math.exp(-2.0), 0.2
    assert out[:, 1].tolist() == pytest.approx([a / (a + b), b / (a + b)], abs=1e-6)
    # x = 0: ratio exp(2) the other way
    a, b = 0.8, 0.2 * math.exp(-2.0)
    assert out[:, 2].tolist() == pytest.approx([a / (a + b), b / (a + b)], abs=1e-6)


def test_full_covariance_matches_scipy_and_keeps_outside_pixels() -> None:
    rng = np.random.default_rng(0)
    k, m = 4, 3
    means = rng.normal(size=(k, m))
    a = rng.normal(size=(k, m, m))
    covs = np.einsum("kij,klj->kil", a, a) + 0.5 * np.eye(m)
    g = _gaussians(means.tolist(), covs.tolist())
    image = torch.as_tensor(rng.normal(size=(2, m, 5, 6)), dtype=torch.float32)
    probs = torch.softmax(torch.as_tensor(rng.normal(size=(2, k, 5, 6)),
                                          dtype=torch.float32), dim=1)
    roi = torch.as_tensor(rng.random((2, 5, 6)) < 0.7)
    out = fuse_probabilities(probs, image, roi, g)
    x = image.double().permute(0, 2, 3, 1).reshape(-1, m).numpy()
    log_lik = np.stack([multivariate_normal(means[j], covs[j]).logpdf(x)
                        for j in range(k)], axis=1)  # reference: scipy, class by class
    log_post = np.log(probs.double().permute(0, 2, 3, 1).reshape(-1, k).numpy()) + log_lik
    ref = np.exp(log_post - log_post.max(axis=1, keepdims=True))
    ref /= ref.sum(axis=1, keepdims=True)
    got = out.permute(0, 2, 3, 1).reshape(-1, k).numpy()
    inside = roi.reshape(-1).numpy()
    np.testing.assert_allclose(got[inside], ref[inside], atol=1e-5)
    np.testing.assert_array_equal(got[~inside],
                                  probs.permute(0, 2, 3, 1).reshape(-1, k).numpy()[~inside])
    assert out.dtype == probs.dtype
    torch.testing.assert_close(out.sum(dim=1), torch.ones(2, 5, 6), atol=1e-5, rtol=0)


def test_zero_probability_is_floored_not_a_veto() -> None:
    g = _gaussians([[0.0], [10.0]], [[[1.0]], [[1.0]]])
    image = torch.tensor([10.0]).reshape(1, 1, 1, 1)
    probs = torch.tensor([1.0, 0.0]).reshape(1, 2, 1, 1)
    out = fuse_probabilities(probs, image, torch.ones(1, 1, 1, dtype=torch.bool), g)
    assert bool(torch.isfinite(out).all())
    # log-likelihood ratio 50 beats the floor's log(1e-6) = -13.8
    assert float(out[0, 1, 0, 0]) > 0.99
    assert PROB_FLOOR == 1e-6


def test_several_models_average_their_log_likelihoods() -> None:
    g1 = _gaussians([[0.0], [2.0]], [[[1.0]], [[1.0]]])
    g2 = _gaussians([[0.0], [4.0]], [[[1.0]], [[4.0]]])
    image = torch.tensor([1.5]).reshape(1, 1, 1, 1)
    probs = torch.tensor([0.5, 0.5]).reshape(1, 2, 1, 1)
    roi = torch.ones(1, 1, 1, dtype=torch.bool)
    out = fuse_probabilities(probs, image, roi, [g1, g2])[0, :, 0, 0]
    ll = [[multivariate_normal(g.means[j], g.covariances[j]).logpdf([1.5]) for j in range(2)]
          for g in (g1, g2)]
    mean_ll = np.mean(ll, axis=0)
    ref = np.exp(mean_ll - mean_ll.max())
    assert out.tolist() == pytest.approx((ref / ref.sum()).tolist(), abs=1e-6)


def test_fit_matches_numpy_on_the_drawn_slices(phantom_batch: SliceBatch) -> None:
    g = fit_class_gaussians(phantom_batch, n_slices=5, seed=3)
    chosen = draw_slices(len(phantom_batch), 5, 3)
    image = phantom_batch.image[chosen].double().numpy()
    labels = phantom_batch.labels[chosen].numpy()
    roi = phantom_batch.roi[chosen].numpy()
    x = image.transpose(0, 2, 3, 1)  # (S, H, W, M)
    for j in range(4):  # reference, class by class
        pix = x[roi & (labels == j + 1)]
        np.testing.assert_allclose(g.means[j], pix.mean(axis=0), atol=1e-10)
        np.testing.assert_allclose(g.covariances[j], np.cov(pix.T, bias=True)
                                   + 1e-6 * np.eye(3), atol=1e-10)
        assert g.n_pixels[j] == len(pix)
    np.testing.assert_allclose(g.means, compute_mu_data(phantom_batch, n_slices=5, seed=3),
                               atol=1e-6)


def test_round_trip_and_refusals() -> None:
    g = _gaussians([[0.0, 1.0], [2.0, 3.0]], [np.eye(2).tolist(), (2 * np.eye(2)).tolist()])
    back = ClassGaussians.from_dict(g.to_dict(), 2, 2)
    np.testing.assert_array_equal(back.covariances, g.covariances)
    with pytest.raises(InputError, match=r"must have means \(K, M\) = \(3, 2\)"):
        ClassGaussians.from_dict(g.to_dict(), 3, 2)
    bad = g.to_dict()
    bad["covariances"][0] = [[1.0, 2.0], [2.0, 1.0]]  # eigenvalues 3 and -1
    with pytest.raises(InputError, match="positive definite"):
        ClassGaussians.from_dict(bad, 2, 2)
    with pytest.raises(InputError, match="must hold"):
        ClassGaussians.from_dict({"means": []}, 2, 2)
    with pytest.raises(InputError, match="do not match"):
        fuse_probabilities(torch.ones(1, 2, 3, 3), torch.ones(1, 2, 3, 4),
                           torch.ones(1, 3, 3, dtype=torch.bool), g)
    with pytest.raises(InputError, match="the slices have 2 classes in 3 sequences"):
        fuse_probabilities(torch.ones(1, 2, 3, 3), torch.ones(1, 3, 3, 3),
                           torch.ones(1, 3, 3, dtype=torch.bool), g)


def test_fit_refuses_a_class_without_enough_pixels(phantom_batch: SliceBatch) -> None:
    labels = phantom_batch.labels.clone()
    roi = phantom_batch.roi
    # leave 2 scar pixels in the whole batch: fewer than M + 1 = 4
    scar = (labels == 4) & roi
    keep = torch.zeros_like(scar)
    first = torch.nonzero(scar)[:2]
    keep[tuple(first.T)] = True
    labels[scar & ~keep] = 2
    few = SliceBatch(**{**phantom_batch.__dict__, "labels": labels})
    with pytest.raises(InputError, match="scar have fewer"):
        fit_class_gaussians(few, n_slices=len(few), seed=0)
