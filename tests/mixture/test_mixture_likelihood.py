"""The likelihood core against a slow scipy.stats reference, plus properties and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from deepgmm.errors import InputError
from deepgmm.mixture import check_inputs, gmm_nll, m_step, mu_penalty, svgmm_nll
from deepgmm.mixture.likelihood import MixtureParams, log_densities

FLOOR = 1e-3


def _data(seed: int, b: int = 2, m: int = 3, k: int = 3, h: int = 7, w: int = 6,
          dtype: torch.dtype = torch.float64):
    gen = torch.Generator().manual_seed(seed)
    image = torch.randn(b, m, h, w, generator=gen, dtype=dtype)
    logits = 2.0 * torch.randn(b, k, h, w, generator=gen, dtype=dtype)
    roi = torch.rand(b, h, w, generator=gen) < 0.7
    roi[:, :2, :2] = True  # at least 4 pixels per slice
    return image, logits, roi


def _reference(resp: np.ndarray, image: np.ndarray, roi: np.ndarray, covariance: str,
               log_weights_per_pixel: bool) -> tuple[list[float], list[dict]]:
    """Slow reference with loops over slices, classes and pixels and scipy.stats."""
    nlls, params = [], []
    for b in range(image.shape[0]):
        x = image[b][:, roi[b]].T  # (N, M)
        p = resp[b][:, roi[b]].T  # (N, K)
        n_k = p.sum(axis=0)
        means, covs = [], []
        for k in range(p.shape[1]):
            mu = (p[:, k:k + 1] * x).sum(axis=0) / n_k[k]
            d = x - mu
            if covariance == "diag":
                cov = np.diag((p[:, k:k + 1] * d * d).sum(axis=0) / n_k[k] + FLOOR)
            else:
                cov = (p[:, k, None, None] * d[:, :, None] * d[:, None, :]).sum(axis=0)
                cov = cov / n_k[k] + FLOOR * np.eye(x.shape[1])
            means.append(mu)
            covs.append(cov)
        log_dens = np.stack([multivariate_normal(means[k], covs[k]).logpdf(x)
                             for k in range(p.shape[1])], axis=1)  # (N, K)
        if log_weights_per_pixel:
            log_w = np.log(p)
        else:
            log_w = np.log(n_k / x.shape[0])[None, :]
        nlls.append(-float(np.mean(logsumexp(log_dens + log_w, axis=1))))
        params.append({"weights": n_k / x.shape[0], "means": np.stack(means),
                       "covs": np.stack(covs)})
    return nlls, params


@pytest.mark.parametrize("covariance", ["diag", "full"])
@pytest.mark.parametrize("seed", [0, 1])
def test_gmm_nll_and_m_step_match_scipy(covariance: str, seed: int) -> None:
    image, logits, roi = _data(seed)
    resp = torch.softmax(logits, dim=1)
    nll, params = gmm_nll(resp, image, roi, covariance=covariance, var_floor=FLOOR)
    ref_nll, ref_params = _reference(resp.numpy(), image.numpy(), roi.numpy(), covariance,
                                     log_weights_per_pixel=False)
    np.testing.assert_allclose(nll.numpy(), ref_nll, rtol=1e-10, atol=1e-10)
    for b, ref in enumerate(ref_params):
        np.testing.assert_allclose(params.weights[b].numpy(), ref["weights"], atol=1e-12)
        np.testing.assert_allclose(params.means[b].numpy(), ref["means"], atol=1e-10)
        covs = params.covariances[b].numpy()
        if covariance == "diag":
            covs = np.stack([np.diag(c) for c in covs])
        np.testing.assert_allclose(covs, ref["covs"], atol=1e-10)


@pytest.mark.parametrize("covariance", ["diag", "full"])
def test_svgmm_nll_matches_scipy(covariance: str) -> None:
    image, logits, roi = _data(3)
    log_resp = torch.log_softmax(logits, dim=1)
    nll, _ = svgmm_nll(log_resp, image, roi, covariance=covariance, var_floor=FLOOR)
    ref_nll, _ = _reference(log_resp.exp().numpy(), image.numpy(), roi.numpy(), covariance,
                            log_weights_per_pixel=True)
    np.testing.assert_allclose(nll.numpy(), ref_nll, rtol=1e-10, atol=1e-10)


def test_hand_computed_single_class() -> None:
    # One class, one sequence, pixels 0 and 2: mean 1, variance 1 (+ floor).
    image = torch.tensor([0.0, 2.0, 99.0], dtype=torch.float64).reshape(1, 1, 1, 3)
    roi = torch.tensor([[[True, True, False]]])
    resp = torch.ones(1, 1, 1, 3, dtype=torch.float64)
    nll, params = gmm_nll(resp, image, roi, var_floor=FLOOR)
    var = 1.0 + FLOOR
    expected = 0.5 * np.log(2 * np.pi * var) + 0.5 / var
    assert params.means.item() == pytest.approx(1.0)
    assert params.covariances.item() == pytest.approx(var)
    assert nll.item() == pytest.approx(expected, abs=1e-12)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), covariance=st.sampled_from(["diag", "full"]),
       perm_seed=st.integers(0, 10_000))
def test_permuting_classes_changes_nothing(seed: int, covariance: str, perm_seed: int) -> None:
    image, logits, roi = _data(seed, k=4)
    perm = torch.randperm(4, generator=torch.Generator().manual_seed(perm_seed))
    resp = torch.softmax(logits, dim=1)
    nll, params = gmm_nll(resp, image, roi, covariance=covariance)
    nll_p, params_p = gmm_nll(resp[:, perm], image, roi, covariance=covariance)
    torch.testing.assert_close(nll_p, nll, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(params_p.means, params.means[:, perm])
    log_resp = torch.log_softmax(logits, dim=1)
    sv, _ = svgmm_nll(log_resp, image, roi, covariance=covariance)
    sv_p, _ = svgmm_nll(log_resp[:, perm], image, roi, covariance=covariance)
    torch.testing.assert_close(sv_p, sv, rtol=1e-12, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), covariance=st.sampled_from(["diag", "full"]),
       junk=st.sampled_from([0.0, 1e6, float("nan"), float("inf")]))
def test_masked_batch_equals_per_slice(seed: int, covariance: str, junk: float) -> None:
    image, logits, roi = _data(seed, b=3)
    resp = torch.softmax(logits, dim=1)
    nll, params = gmm_nll(resp, image, roi, covariance=covariance)
    sv, _ = svgmm_nll(torch.log_softmax(logits, dim=1), image, roi, covariance=covariance)
    # Values outside the ROI must not matter, not even NaN or inf.
    dirty = torch.where(roi.unsqueeze(1), image, torch.tensor(junk, dtype=image.dtype))
    for b in range(3):
        one, params_one = gmm_nll(resp[b:b + 1], dirty[b:b + 1], roi[b:b + 1],
                                  covariance=covariance)
        torch.testing.assert_close(one[0], nll[b], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(params_one.means[0], params.means[b])
        sv_one, _ = svgmm_nll(torch.log_softmax(logits[b:b + 1], dim=1), dirty[b:b + 1],
                              roi[b:b + 1], covariance=covariance)
        torch.testing.assert_close(sv_one[0], sv[b], rtol=1e-12, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), offset=st.floats(0.0, 90.0),
       covariance=st.sampled_from(["diag", "full"]))
def test_gradients_finite_with_near_empty_class(seed: int, offset: float,
                                                covariance: str) -> None:
    image, logits, roi = _data(seed, k=4, dtype=torch.float32)
    logits = logits.clone()
    logits[:, 3] -= offset  # class 3 nearly empty: p ~ exp(-offset)
    logits.requires_grad_(True)
    nll, _ = gmm_nll(torch.softmax(logits, dim=1), image, roi, covariance=covariance)
    sv, _ = svgmm_nll(torch.log_softmax(logits, dim=1), image, roi, covariance=covariance)
    (nll.sum() + sv.sum()).backward()
    assert torch.isfinite(nll).all() and torch.isfinite(sv).all()
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("covariance", ["diag", "full"])
def test_collapsed_and_empty_classes_give_finite_nll(covariance: str) -> None:
    image, _, roi = _data(5, b=1, k=4, dtype=torch.float32)
    labels = torch.zeros(1, 7, 6, dtype=torch.long)
    labels[0, 3:] = 1
    labels[0, 0, 0] = 2  # class 2 collapses onto one pixel; class 3 is empty
    resp = torch.nn.functional.one_hot(labels, 4).permute(0, 3, 1, 2).float()
    nll, params = gmm_nll(resp, image, roi, covariance=covariance)
    assert torch.isfinite(nll).all()
    assert torch.isfinite(params.covariances).all() and torch.isfinite(params.means).all()
    assert params.weights[0, 3] == 0.0
    sv, _ = svgmm_nll(resp.clamp_min(0).log(), image, roi, covariance=covariance)
    assert torch.isfinite(sv).all()


def test_mu_penalty() -> None:
    means = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    assert mu_penalty(means, torch.zeros(2, 2)).item() == pytest.approx(30.0)


def test_bad_inputs_raise_input_error() -> None:
    image, logits, roi = _data(0, b=2, k=3)
    resp = torch.softmax(logits, dim=1)
    with pytest.raises(InputError, match="image must be"):
        gmm_nll(resp, image[0], roi)
    with pytest.raises(InputError, match="roi must be"):
        gmm_nll(resp, image, roi[:, :3])
    with pytest.raises(InputError, match="roi must be a bool"):
        gmm_nll(resp, image, roi.float())
    with pytest.raises(InputError, match="resp must be"):
        gmm_nll(resp[:, :, :3], image, roi)
    with pytest.raises(InputError, match="covariance must be"):
        gmm_nll(resp, image, roi, covariance="spherical")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="var_floor"):
        m_step(resp, image, roi, var_floor=0.0)
    small = torch.zeros_like(roi)
    small[:, 0, :2] = True  # 2 pixels, 3 classes
    with pytest.raises(InputError, match="slice 0: the ROI has 2 pixels, needs at least 3"):
        gmm_nll(resp, image, small)
    nan_image = image.clone()
    nan_image[1, 2, 0, 0] = float("nan")
    with pytest.raises(InputError, match="slice 1, sequence 2: image has NaN"):
        gmm_nll(resp, nan_image, roi)
    const = image.clone()
    const[0, 1] = 3.0
    with pytest.raises(InputError, match="slice 0, sequence 1: image is constant"):
        svgmm_nll(torch.log(resp), const, roi)
    nan_resp = resp.clone()
    nan_resp[1, 0, 0, 0] = float("nan")
    with pytest.raises(InputError, match="slice 1: resp has NaN"):
        gmm_nll(nan_resp, image, roi)
    with pytest.raises(InputError, match="n_components|classes"):
        check_inputs(image, roi, n_components=4, maps=resp)


def test_not_positive_definite_covariance_is_an_input_error() -> None:
    image, _, _ = _data(0, b=1, k=2)
    cov = torch.eye(3, dtype=torch.float64).repeat(1, 2, 1, 1)
    cov[0, 1, 0, 0] = -1.0
    params = MixtureParams(weights=torch.full((1, 2), 0.5, dtype=torch.float64),
                           means=torch.zeros(1, 2, 3, dtype=torch.float64),
                           covariances=cov, covariance="full")
    with pytest.raises(InputError, match="slice 0, class 1 is not positive definite"):
        log_densities(image, params)
