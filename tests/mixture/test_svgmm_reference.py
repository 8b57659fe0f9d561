"""SpatiallyVariantEM against the slow NumPy reference (tests/helpers/svgmm_reference.py):
a few GMM and SVGMM iterations on a small random case agree to ~1e-9 in float64."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from helpers import svgmm_reference
from sklearn.exceptions import ConvergenceWarning

from deepgmm.mixture.em import SpatiallyVariantEM

K, M, H, W = 3, 2, 7, 6


@pytest.mark.parametrize("covariance", ["diag", "full"])
def test_svgmm_iterations_match_the_numpy_reference(covariance: str) -> None:
    rng = np.random.default_rng(12)
    centres = np.array([[-2.0, 0.0], [1.5, 1.0], [0.0, -2.5]])
    labels = rng.integers(0, K, size=(2, H, W))
    image = (centres[labels] + 0.9 * rng.normal(size=(2, H, W, M))).transpose(0, 3, 1, 2)
    roi = np.ones((2, H, W), dtype=bool)
    roi[0, :2, :3] = False  # slices of different ROI sizes (packing pads the smaller)
    roi[1, -1] = False
    means0 = centres + rng.normal(scale=0.7, size=(K, M))
    weights0 = np.array([0.5, 0.3, 0.2])
    var0 = rng.uniform(0.5, 2.0, size=(K, M))
    covs0 = np.stack([np.diag(v) for v in var0])
    if covariance == "full":
        covs0 = covs0 + 0.2 * np.array([[[0, 1], [1, 0]]])
    gmm_iter, sv_iter, floor = 3, 4, 1e-6
    est = SpatiallyVariantEM(
        n_components=K, covariance=covariance, init="mu_data",
        mu_data=torch.from_numpy(means0), weights_init=torch.from_numpy(weights0),
        covariances_init=torch.from_numpy(var0 if covariance == "diag" else covs0),
        gmm_tol=0.0, gmm_max_iter=gmm_iter, tol=0.0, max_iter=sv_iter, var_floor=floor)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # tol 0: runs every iteration
        est.fit(torch.from_numpy(image), torch.from_numpy(roi))
    assert est.means_.dtype == torch.float64
    assert est.n_iter_.tolist() == [sv_iter, sv_iter]
    assert est.gmm_n_iter_.tolist() == [gmm_iter, gmm_iter]
    for b in range(2):
        x = image[b][:, roi[b]].T  # (N, M), row-major ROI order
        ref = svgmm_reference.svgmm_em(x, weights0, means0, covs0, gmm_iter=gmm_iter,
                                       sv_iter=sv_iter, floor=floor,
                                       diag=covariance == "diag")
        covs = est.covariances_[b].numpy()
        if covariance == "diag":
            np.testing.assert_allclose(covs,
                                       np.stack([np.diag(c) for c in ref["covariances"]]),
                                       rtol=0, atol=1e-9)
        else:
            np.testing.assert_allclose(covs, ref["covariances"], rtol=0, atol=1e-9)
        np.testing.assert_allclose(est.means_[b].numpy(), ref["means"], rtol=0, atol=1e-9)
        np.testing.assert_allclose(est.weights_[b].numpy(), ref["weights"], rtol=0, atol=1e-9)
        pixel = est.pixel_weights_[b].numpy()[:, roi[b]].T  # (N, K)
        np.testing.assert_allclose(pixel, ref["pixel_weights"], rtol=0, atol=1e-9)
        np.testing.assert_allclose(est.lower_bounds_[b].numpy(), ref["lower_bounds"],
                                   rtol=0, atol=1e-9)
        assert float(est.lower_bound_[b]) == pytest.approx(ref["lower_bounds"][-1], abs=1e-9)
        # the reference is not trivially satisfied: the iterations moved the parameters
        assert np.abs(ref["means"] - means0).max() > 0.1
        assert np.ptp(ref["lower_bounds"]) > 1e-4
