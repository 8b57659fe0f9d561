"""Hypothesis properties: the likelihoods, the M-step and the EM estimators never return a
silent NaN or Inf. Nearly empty classes, intensity scales from 1e-6 to 1e6, sequences
constant inside the ROI and one-pixel ROIs either give finite results everywhere or raise
:class:`InputError` (exactly when the input is ill-posed)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from deepgmm.errors import InputError
from deepgmm.mixture import (
    GaussianMixtureEM,
    SpatiallyVariantEM,
    gmm_nll,
    m_step,
    svgmm_nll,
)


@dataclass(frozen=True)
class Case:
    image: torch.Tensor  # (B, M, H, W)
    roi: torch.Tensor  # (B, H, W) bool
    logits: torch.Tensor  # (B, K, H, W); one class nearly empty when asked
    ill_posed: bool  # a slice with < max(K, 2) ROI pixels or a sequence constant in it


@st.composite
def cases(draw: st.DrawFn, dtype: torch.dtype = torch.float64) -> Case:
    b, k, m = draw(st.integers(1, 2)), draw(st.integers(1, 4)), draw(st.integers(1, 3))
    h, w = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    scale = 10.0 ** draw(st.integers(-6, 6))
    offset = draw(st.sampled_from([0.0, 1.0, -3.0])) * scale * 10.0
    image = (torch.randn(b, m, h, w, generator=gen, dtype=torch.float64) * scale
             + offset).to(dtype)
    roi_kind = draw(st.sampled_from(["random", "one-pixel", "full"]))
    if roi_kind == "full":
        roi = torch.ones(b, h, w, dtype=torch.bool)
    elif roi_kind == "one-pixel":
        roi = torch.zeros(b, h, w, dtype=torch.bool)
        roi[:, draw(st.integers(0, h - 1)), draw(st.integers(0, w - 1))] = True
    else:
        roi = torch.rand(b, h, w, generator=gen) < 0.6
    if draw(st.booleans()):  # one sequence constant inside the ROI of the first slice
        seq = draw(st.integers(0, m - 1))
        image[0, seq] = torch.where(roi[0], torch.tensor(offset + scale, dtype=dtype),
                                    image[0, seq])
    logits = torch.randn(b, k, h, w, generator=gen, dtype=dtype) * draw(
        st.sampled_from([0.1, 1.0, 30.0]))
    if k > 1 and draw(st.booleans()):  # class 0 nearly empty: p ~ 1e-12 everywhere
        logits[:, 0] = logits[:, 1:].logsumexp(dim=1) + torch.log(
            torch.tensor(1e-12, dtype=dtype))
    x = image.transpose(0, 1)  # (M, B, H, W)
    inside = roi.unsqueeze(0).expand_as(x)
    big = torch.finfo(dtype).max
    hi = torch.where(inside, x, -big).amax(dim=(2, 3))  # (M, B)
    lo = torch.where(inside, x, big).amin(dim=(2, 3))
    counts = roi.sum(dim=(1, 2))
    ill_posed = bool((counts < max(k, 2)).any()) or bool(
        ((hi <= lo) & (counts > 0)).any())
    return Case(image=image, roi=roi, logits=logits, ill_posed=ill_posed)


def _assert_finite(name: str, value: torch.Tensor) -> None:
    assert bool(torch.isfinite(value).all()), f"{name} has NaN/Inf: {value}"


@settings(max_examples=400, deadline=None)
@given(case=cases(), covariance=st.sampled_from(["diag", "full"]))
def test_m_step_is_finite_or_refused(case: Case, covariance: str) -> None:
    resp = torch.softmax(case.logits, dim=1)
    if case.ill_posed:
        with pytest.raises(InputError):
            m_step(resp, case.image, case.roi, covariance=covariance)
        return
    params = m_step(resp, case.image, case.roi, covariance=covariance)
    for name in ("weights", "means", "covariances"):
        _assert_finite(name, getattr(params, name))
    torch.testing.assert_close(params.weights.sum(dim=1),
                               torch.ones(case.image.shape[0], dtype=torch.float64))
    var = params.covariances if covariance == "diag" else params.covariances.diagonal(
        dim1=-2, dim2=-1)
    assert bool((var >= 1e-3 * (1 - 1e-9)).all())  # the variance floor holds


@settings(max_examples=400, deadline=None)
@given(case=cases(dtype=torch.float32), spatially_variant=st.booleans(),
       gradient=st.sampled_from(["closed_form", "autograd"]),
       covariance=st.sampled_from(["diag", "full"]))
def test_losses_and_gradients_are_finite_or_refused(case: Case, spatially_variant: bool,
                                                    gradient: str, covariance: str) -> None:
    """float32, as the networks train: the loss and its gradient w.r.t. the logits."""
    logits = case.logits.clone().requires_grad_(True)
    maps = torch.log_softmax(logits, 1) if spatially_variant else torch.softmax(logits, 1)
    loss = svgmm_nll if spatially_variant else gmm_nll
    if case.ill_posed:
        with pytest.raises(InputError):
            loss(maps, case.image, case.roi, covariance=covariance, gradient=gradient)
        return
    if covariance == "full":
        # Known weakness (found by this property): in float32, a full covariance of a
        # nearly empty class at extreme scales can lose positive definiteness; the loss then
        # refuses with a clear InputError rather than returning NaN.
        try:
            nll, params = loss(maps, case.image, case.roi, covariance=covariance,
                               gradient=gradient)
        except InputError as err:
            assert "not positive definite" in str(err)
            return
    else:
        nll, params = loss(maps, case.image, case.roi, covariance=covariance,
                           gradient=gradient)
    _assert_finite("nll", nll)
    _assert_finite("means", params.means)
    _assert_finite("covariances", params.covariances)
    nll.sum().backward()
    assert logits.grad is not None
    _assert_finite("d nll / d logits", logits.grad)


@settings(max_examples=250, deadline=None)
@given(case=cases(), spatially_variant=st.booleans(),
       covariance=st.sampled_from(["diag", "full"]), init=st.sampled_from(["random", "kmeans"]))
def test_em_estimators_are_finite_or_refused(case: Case, spatially_variant: bool,
                                             covariance: str, init: str) -> None:
    k = case.logits.shape[1]
    est = (SpatiallyVariantEM(n_components=k, covariance=covariance, init=init, max_iter=3,
                              gmm_max_iter=3, seed=0)
           if spatially_variant else
           GaussianMixtureEM(n_components=k, covariance=covariance, init=init, max_iter=3,
                             seed=0))
    if case.ill_posed:
        with pytest.raises(InputError):
            est.fit(case.image, case.roi)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 3 iterations: convergence warnings are expected
        est.fit(case.image, case.roi)
    for name in ("weights_", "means_", "covariances_"):
        _assert_finite(name, getattr(est, name))
    _assert_finite("predict_proba", est.predict_proba(case.image, case.roi))
    _assert_finite("score", est.score(case.image, case.roi))

