"""Variance and weight penalties of prior="all": hand values, minima, gradients."""

from __future__ import annotations

import math

import pytest
import torch

from deepgmm.mixture.likelihood import gmm_nll, svgmm_nll
from deepgmm.mixture.prior import ParameterPrior, log_variance_penalty, weight_penalty


def test_hand_computed_penalties():
    target_lv = torch.tensor([[0.0, math.log(2.0)], [1.0, -1.0]], dtype=torch.float64)
    var = torch.tensor([[1.0, 1.0], [math.e, math.exp(-1.0)]], dtype=torch.float64)
    # only the (0, 1) entry differs: (0 - log 2)^2
    assert float(log_variance_penalty(var.log(), target_lv)) == pytest.approx(
        math.log(2.0) ** 2, rel=1e-12)
    target_w = torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64)
    w = torch.tensor([0.25, 0.25, 0.5], dtype=torch.float64)
    expected = 0.5 * math.log(0.5 / 0.25) + 0.25 * math.log(0.25 / 0.5)
    assert float(weight_penalty(w, target_w)) == pytest.approx(expected, rel=1e-12)
    assert float(weight_penalty(target_w, target_w)) == 0.0


def test_batch_penalty_acts_on_batch_means():
    """Two slices whose log variances / weights average to the targets: batch penalty 0,
    per-slice penalty > 0."""
    lv = torch.zeros(2, 3, dtype=torch.float64)
    tw = torch.tensor([0.5, 0.5], dtype=torch.float64)
    prior = ParameterPrior(log_variances=lv, weights=tw, lam_var=2.0, lam_weights=3.0)
    variances = torch.stack([torch.full((2, 3), math.e), torch.full((2, 3), math.exp(-1.0))]
                            ).double()  # (B=2, K=2, M=3), mean log = 0
    weights = torch.tensor([[0.5, 0.5], [0.5, 0.5]], dtype=torch.float64)
    assert float(prior.penalty(weights, variances)) == pytest.approx(0.0, abs=1e-12)
    # per slice: each slice's log-variance error is 1 in 6 entries -> 6, times lam_var 2
    assert float(prior.penalty(weights, variances, per_slice=True)) == pytest.approx(12.0)
    weights = torch.tensor([[0.75, 0.25], [0.5, 0.5]], dtype=torch.float64)
    kl = 0.5 * math.log(0.5 / 0.625) + 0.5 * math.log(0.5 / 0.375)
    assert float(prior.penalty(weights, variances)) == pytest.approx(3.0 * kl, rel=1e-12)


def test_penalty_gradient_matches_finite_differences():
    gen = torch.Generator().manual_seed(0)
    prior = ParameterPrior(log_variances=torch.randn(3, 2, generator=gen, dtype=torch.float64),
                           weights=torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64),
                           lam_var=0.7, lam_weights=1.3)
    variances = torch.rand(4, 3, 2, generator=gen, dtype=torch.float64) + 0.1
    weights = torch.softmax(torch.randn(4, 3, generator=gen, dtype=torch.float64), dim=1)
    for per_slice in (False, True):
        assert torch.autograd.gradcheck(
            lambda w, v, ps=per_slice: prior.penalty(w, v, per_slice=ps),
            (weights.requires_grad_(), variances.requires_grad_()))


@pytest.mark.parametrize("spatially_variant", [False, True])
def test_gradient_through_closed_form_matches_autograd(spatially_variant: bool) -> None:
    """NLL + prior penalty: the closed-form backward of the diagonal loss carries the
    penalty's gradient to the responsibilities exactly as autograd through the M-step."""
    gen = torch.Generator().manual_seed(1)
    b, k, m, h, w = 3, 4, 2, 8, 8
    image = torch.randn(b, m, h, w, generator=gen, dtype=torch.float64)
    roi = torch.rand(b, h, w, generator=gen) > 0.3
    logits = torch.randn(b, k, h, w, generator=gen, dtype=torch.float64)
    prior = ParameterPrior(log_variances=torch.randn(k, m, generator=gen, dtype=torch.float64),
                           weights=torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=torch.float64),
                           lam_var=0.5, lam_weights=2.0)
    grads = {}
    for gradient in ("closed_form", "autograd"):
        x = logits.clone().requires_grad_()
        log_resp = torch.log_softmax(x, dim=1)
        if spatially_variant:
            nll, params = svgmm_nll(log_resp, image, roi, gradient=gradient)
        else:
            nll, params = gmm_nll(log_resp.exp(), image, roi, gradient=gradient)
        loss = nll.mean() + prior.penalty(params.weights, params.covariances)
        (grads[gradient],) = torch.autograd.grad(loss, x)
    assert grads["closed_form"].abs().max() > 1e-4
    torch.testing.assert_close(grads["closed_form"], grads["autograd"], rtol=1e-7, atol=1e-9)
    # and the penalty's own contribution is not zero
    x = logits.clone().requires_grad_()
    _, params = svgmm_nll(torch.log_softmax(x, dim=1), image, roi)
    (g_prior,) = torch.autograd.grad(prior.penalty(params.weights, params.covariances), x)
    assert g_prior.abs().max() > 1e-4
