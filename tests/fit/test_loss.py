"""The deepG / deepSVG loss module against direct NumPy / SciPy computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import logsumexp, softmax
from scipy.stats import multivariate_normal

from deepgmm.fit import loss
from deepgmm.mixture.likelihood import DEFAULT_VAR_FLOOR


def _slice(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``logits (2, K=3, 5, 6)``, ``image (2, M=2, 5, 6)``, ``roi (2, 5, 6)``, float64."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 3, 5, 6, generator=gen, dtype=torch.float64) * 2
    image = torch.randn(2, 2, 5, 6, generator=gen, dtype=torch.float64)
    roi = torch.rand(2, 5, 6, generator=gen) > 0.3
    return logits, image, roi


def _direct_nll(logits: np.ndarray, image: np.ndarray, roi: np.ndarray,
                spatially_variant: bool) -> tuple[float, np.ndarray]:
    """One slice: M-step on the ROI pixels, then -mean_n log sum_k w_nk N(x_n; mu_k, var_k)
    with SciPy's Gaussian density; w_nk = pi_k (GMM) or p_nk (spatially variant)."""
    p = softmax(logits, axis=0)[:, roi]  # (K, N)
    x = image[:, roi]  # (M, N)
    n_k = p.sum(axis=1)
    means = (p @ x.T) / (n_k[:, None] + 10 * np.finfo(np.float64).eps)
    var = np.stack([(p[k] * (x - means[k][:, None]) ** 2).sum(axis=1) / n_k[k]
                    for k in range(p.shape[0])]) + DEFAULT_VAR_FLOOR
    log_dens = np.stack([multivariate_normal(means[k], np.diag(var[k])).logpdf(x.T)
                         for k in range(p.shape[0])])  # (K, N)
    log_w = np.log(p) if spatially_variant else np.log(n_k / roi.sum())[:, None]
    return float(-logsumexp(log_w + log_dens, axis=0).mean()), means


@pytest.mark.parametrize("model", ["deepg", "deepsvg"])
def test_per_slice_nll_is_the_mixture_nll(model: str) -> None:
    logits, image, roi = _slice()
    packed = loss.pack_slices(image, roi, 3)
    from_logits, mix = loss.nll_of_logits(logits, packed, model)
    from_log_resp, mix2 = loss.nll_of_log_resp(logits.log_softmax(dim=1), packed, model)
    for b in range(2):
        expected, means = _direct_nll(logits[b].numpy(), image[b].numpy(), roi[b].numpy(),
                                      spatially_variant=model == "deepsvg")
        assert float(from_logits[b]) == pytest.approx(expected, rel=1e-9)
        assert float(from_log_resp[b]) == pytest.approx(expected, rel=1e-9)
        np.testing.assert_allclose(mix.means[b].numpy(), means, rtol=1e-9)
        np.testing.assert_allclose(mix2.means[b].numpy(), means, rtol=1e-9)


def test_the_two_models_differ() -> None:
    # spatially variant weights p_nk fit the slice at least as well as global pi_k here
    logits, image, roi = _slice(1)
    packed = loss.pack_slices(image, roi, 3)
    g, _ = loss.nll_of_logits(logits, packed, "deepg")
    v, _ = loss.nll_of_logits(logits, packed, "deepsvg")
    assert (g - v).abs().min() > 1e-3


def test_network_nll_matches_the_packed_loss() -> None:
    torch.manual_seed(0)
    net = torch.nn.Conv2d(2, 3, 3, padding=1).double()
    _, image, roi = _slice(2)
    with torch.no_grad():
        nll, resp, means = loss.network_nll(net, image, roi, "deepsvg")
        ref, mix = loss.nll_of_logits(net(image), loss.pack_slices(image, roi), "deepsvg")
    torch.testing.assert_close(nll, ref, rtol=1e-12, atol=0)
    torch.testing.assert_close(means, mix.means, rtol=1e-12, atol=0)
    torch.testing.assert_close(resp, net(image).softmax(dim=1).detach(), rtol=1e-12, atol=1e-15)


def test_slice_and_batch_penalties_by_hand() -> None:
    nll = torch.tensor([1.0, 3.0], dtype=torch.float64)
    means = torch.tensor([[[1.0, 2.0]], [[3.0, 0.0]]], dtype=torch.float64)  # (B=2, K=1, M=2)
    mu = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    # per slice: ||(1, 1)||^2 = 2 and ||(3, -1)||^2 = 10
    assert loss.slice_loss(nll, means, lam=0.5, mu_data=mu).tolist() == [2.0, 8.0]
    assert loss.slice_loss(nll, means, lam=0.5, mu_data=None) is nll
    # batch: mean means (2, 1), ||(2, 0)||^2 = 4; slice: mean(2, 10) = 6
    assert float(loss.batch_loss(nll, means, lam=0.5, mu_data=mu)) == 2.0 + 0.5 * 4
    assert float(loss.batch_loss(nll, means, lam=0.5, mu_data=mu, penalty="slice")) == 5.0
    extra = torch.tensor(0.25, dtype=torch.float64)
    assert float(loss.batch_loss(nll, means, lam=0.0, mu_data=mu, extra=extra)) == 2.25
