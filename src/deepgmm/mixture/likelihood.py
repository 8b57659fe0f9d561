"""Closed-form M-step and the negative log-likelihoods of deepG and deepSVG.

Every function is batched over slices, masked by the ROI, differentiable, and works in
log space. Shapes: B slices, K classes, M sequences, H x W pixels.

The M-step follows the method description:

    N_k = sum_n p_nk,  pi_k = N_k / |Omega|,  mu_k = sum_n p_nk x_n / N_k,
    sigma2_k = sum_n p_nk (x_n - mu_k)^2 / N_k  (+ variance floor)

with sums over ROI pixels only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from deepgmm.mixture.gaussian import log_gaussian_diag, log_gaussian_full

Covariance = Literal["diag", "full"]

DEFAULT_VAR_FLOOR = 1e-3
"""Added to every variance (and to the covariance diagonal); data are z-scored, so this is
0.1 % of the slice's variance: enough to stop a class collapsing onto identical values."""

_MASS_EPS = 1e-6


@dataclass
class MixtureParams:
    """Parameters of one mixture per slice.

    Attributes:
        weights: ``(B, K)`` mixing proportions (sum to 1 over K).
        means: ``(B, K, M)``.
        covariances: ``(B, K, M)`` variances for ``"diag"`` or ``(B, K, M, M)`` for ``"full"``.
        covariance: ``"diag"`` or ``"full"``.
    """

    weights: torch.Tensor
    means: torch.Tensor
    covariances: torch.Tensor
    covariance: Covariance = "diag"


def _check_inputs(image: torch.Tensor, roi: torch.Tensor, maps: torch.Tensor,
                  name: str) -> None:
    if image.ndim != 4:
        raise ValueError(f"image must be (B, M, H, W), got shape {tuple(image.shape)}")
    b, _, h, w = image.shape
    if roi.shape != (b, h, w):
        raise ValueError(f"roi must be (B, H, W) = {(b, h, w)}, got {tuple(roi.shape)}")
    if maps.ndim != 4 or maps.shape[0] != b or maps.shape[2:] != (h, w):
        raise ValueError(f"{name} must be (B, K, H, W) with B, H, W = {(b, h, w)}, "
                         f"got {tuple(maps.shape)}")


def m_step(resp: torch.Tensor, image: torch.Tensor, roi: torch.Tensor, *,
           covariance: Covariance = "diag",
           var_floor: float = DEFAULT_VAR_FLOOR) -> MixtureParams:
    """Closed-form weights, means and (co)variances from responsibilities.

    Args:
        resp: ``(B, K, H, W)`` responsibilities p_nk (non-negative, sum to 1 over K).
        image: ``(B, M, H, W)`` pixel features.
        roi: ``(B, H, W)`` bool; only these pixels enter the sums.
        covariance: ``"diag"`` (variances) or ``"full"`` (covariance matrices).
        var_floor: added to each variance / to the covariance diagonal.

    Returns:
        :class:`MixtureParams` with ``weights (B, K)``, ``means (B, K, M)`` and
        ``covariances (B, K, M)`` or ``(B, K, M, M)``.
    """
    _check_inputs(image, roi, resp, "resp")
    if covariance not in ("diag", "full"):
        raise ValueError(f"covariance must be 'diag' or 'full', got {covariance!r}")
    mask = roi.to(resp.dtype).unsqueeze(1)  # (B, 1, H, W)
    p = resp * mask  # (B, K, H, W)
    n_k = p.sum(dim=(2, 3))  # (B, K)
    n_roi = mask.sum(dim=(1, 2, 3)).clamp_min(1.0)  # (B,)
    weights = n_k / n_roi[:, None]
    denom = n_k + _MASS_EPS  # (B, K)
    means = torch.einsum("bkhw,bmhw->bkm", p, image) / denom[..., None]
    diff = image.unsqueeze(1) - means[..., None, None]  # (B, K, M, H, W)
    if covariance == "diag":
        var = torch.einsum("bkhw,bkmhw->bkm", p, diff.square()) / denom[..., None]
        covs = var + var_floor
    else:
        cov = torch.einsum("bkhw,bkmhw,bknhw->bkmn", p, diff, diff) / denom[..., None, None]
        eye = torch.eye(image.shape[1], dtype=image.dtype, device=image.device)
        covs = cov + var_floor * eye
    return MixtureParams(weights=weights, means=means, covariances=covs,
                         covariance=covariance)


def log_densities(image: torch.Tensor, params: MixtureParams) -> torch.Tensor:
    """``(B, K, H, W)`` log N(x_n; mu_k, Sigma_k) for the given parameters."""
    if params.covariance == "diag":
        return log_gaussian_diag(image, params.means, params.covariances)
    return log_gaussian_full(image, params.means, params.covariances)


def _masked_mean(values: torch.Tensor, roi: torch.Tensor) -> torch.Tensor:
    """Mean of ``(B, H, W)`` values over ROI pixels -> ``(B,)``; non-ROI values ignored."""
    mask = roi.to(values.dtype)
    safe = torch.where(roi, values, torch.zeros((), dtype=values.dtype, device=values.device))
    return (safe * mask).sum(dim=(1, 2)) / mask.sum(dim=(1, 2)).clamp_min(1.0)


def gmm_log_joint(image: torch.Tensor, params: MixtureParams) -> torch.Tensor:
    """``(B, K, H, W)`` log pi_k + log N(x_n; mu_k, Sigma_k)."""
    log_w = params.weights.clamp_min(torch.finfo(params.weights.dtype).tiny).log()
    return log_densities(image, params) + log_w[..., None, None]


def gmm_nll(resp: torch.Tensor, image: torch.Tensor, roi: torch.Tensor, *,
            covariance: Covariance = "diag", var_floor: float = DEFAULT_VAR_FLOOR,
            ) -> tuple[torch.Tensor, MixtureParams]:
    """deepG loss: GMM negative log-likelihood with parameters from the M-step.

    ``NLL = -(1/|Omega|) sum_n log sum_k pi_k N(x_n; mu_k, Sigma_k)``.

    Args:
        resp: ``(B, K, H, W)`` responsibilities (the network's softmax).
        image: ``(B, M, H, W)``.
        roi: ``(B, H, W)`` bool.

    Returns:
        ``(nll (B,), params)``.
    """
    params = m_step(resp, image, roi, covariance=covariance, var_floor=var_floor)
    log_mix = torch.logsumexp(gmm_log_joint(image, params), dim=1)  # (B, H, W)
    return -_masked_mean(log_mix, roi), params


def svgmm_nll(log_resp: torch.Tensor, image: torch.Tensor, roi: torch.Tensor, *,
              covariance: Covariance = "diag", var_floor: float = DEFAULT_VAR_FLOOR,
              ) -> tuple[torch.Tensor, MixtureParams]:
    """deepSVG loss: spatially variant GMM negative log-likelihood.

    ``NLL_V = -(1/|Omega|) sum_n log sum_k p_nk N(x_n; mu_k, Sigma_k)`` with the per-pixel
    weights p_nk given as log-probabilities (e.g. ``log_softmax`` of the network's logits);
    means and (co)variances come from the M-step with the same p_nk.

    Args:
        log_resp: ``(B, K, H, W)`` log p_nk.
        image: ``(B, M, H, W)``.
        roi: ``(B, H, W)`` bool.

    Returns:
        ``(nll (B,), params)``; ``params.weights`` holds the ROI-mean of p_nk.
    """
    params = m_step(log_resp.exp(), image, roi, covariance=covariance, var_floor=var_floor)
    log_mix = torch.logsumexp(log_resp + log_densities(image, params), dim=1)
    return -_masked_mean(log_mix, roi), params


def mu_penalty(means: torch.Tensor, mu_data: torch.Tensor) -> torch.Tensor:
    """``||mu - mu_data||^2`` per slice.

    Args:
        means: ``(B, K, M)`` fitted means.
        mu_data: ``(K, M)`` or ``(B, K, M)`` reference class means.

    Returns:
        ``(B,)`` squared Frobenius distance.
    """
    return (means - mu_data).square().sum(dim=(-2, -1))
