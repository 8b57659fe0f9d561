"""Closed-form M-step and the negative log-likelihoods of deepG and deepSVG.

Every function is batched over slices, masked by the ROI, differentiable, and works in
log space. Shapes: B slices, K classes, M sequences, H x W pixels.

The M-step follows the method description:

    N_k = sum_n p_nk,  pi_k = N_k / |Omega|,  mu_k = sum_n p_nk x_n / N_k,
    sigma2_k = sum_n p_nk (x_n - mu_k)^2 / N_k  (+ variance floor)

with sums over ROI pixels only. Inputs are checked once per call (:func:`check_inputs`):
bad shapes, too small or constant ROIs and non-finite values raise
:class:`deepgmm.errors.InputError` instead of giving a NaN loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from deepgmm.errors import InputError
from deepgmm.mixture.gaussian import log_gaussian_diag, log_gaussian_full

Covariance = Literal["diag", "full"]

DEFAULT_VAR_FLOOR = 1e-3
"""Added to every variance (and to the covariance diagonal); data are z-scored, so this is
0.1 % of the slice's variance: enough to stop a class collapsing onto identical values."""


def _mass_eps(dtype: torch.dtype) -> float:
    """Added to class masses N_k before dividing (as scikit-learn: 10 machine epsilons)."""
    return 10.0 * torch.finfo(dtype).eps


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


def _check_shapes(image: torch.Tensor, roi: torch.Tensor, maps: torch.Tensor | None,
                  name: str) -> None:
    if not isinstance(image, torch.Tensor) or not isinstance(roi, torch.Tensor):
        raise InputError("image and roi must be torch tensors, got "
                         f"{type(image).__name__} and {type(roi).__name__}")
    if image.ndim != 4:
        raise InputError(f"image must be (B, M, H, W), got shape {tuple(image.shape)}")
    if not image.is_floating_point():
        raise InputError(f"image must be a floating-point tensor, got {image.dtype}")
    b, _, h, w = image.shape
    if tuple(roi.shape) != (b, h, w):
        raise InputError(f"roi must be (B, H, W) = {(b, h, w)}, got {tuple(roi.shape)}")
    if roi.dtype != torch.bool:
        raise InputError(f"roi must be a bool tensor, got {roi.dtype}")
    if maps is not None:
        if not isinstance(maps, torch.Tensor) or maps.ndim != 4 or maps.shape[0] != b \
                or tuple(maps.shape[2:]) != (h, w):
            shape = tuple(maps.shape) if isinstance(maps, torch.Tensor) else type(maps)
            raise InputError(f"{name} must be (B, K, H, W) with B, H, W = {(b, h, w)}, "
                             f"got {shape}")
        if not maps.is_floating_point():
            raise InputError(f"{name} must be a floating-point tensor, got {maps.dtype}")


def check_inputs(image: torch.Tensor, roi: torch.Tensor, *,
                 n_components: int | None = None, maps: torch.Tensor | None = None,
                 maps_name: str = "resp", log_maps: bool = False) -> None:
    """Raise :class:`InputError` unless the inputs describe a well-posed mixture fit.

    Checks, per slice: shapes and dtypes; at least ``max(K, 2)`` ROI pixels; finite image
    values inside the ROI; no sequence constant inside the ROI; finite ``maps`` inside the
    ROI (for ``log_maps`` only NaN and +inf are refused, -inf is log 0). All checks cost
    one host-device synchronisation.

    Args:
        image: ``(B, M, H, W)`` floating pixel features.
        roi: ``(B, H, W)`` bool.
        n_components: K, when known (taken from ``maps`` otherwise).
        maps: optional ``(B, K, H, W)`` responsibilities or log-responsibilities.
        maps_name: name of ``maps`` for messages.
        log_maps: ``maps`` holds log-probabilities.
    """
    _check_shapes(image, roi, maps, maps_name)
    k = n_components if n_components is not None else (
        maps.shape[1] if maps is not None else 1)
    if maps is not None and n_components is not None and maps.shape[1] != n_components:
        raise InputError(f"{maps_name} has {maps.shape[1]} classes, expected {n_components}")
    if k < 1:
        raise InputError(f"the number of classes must be >= 1, got {k}")
    with torch.no_grad():
        inside = roi.unsqueeze(1)  # (B, 1, H, W)
        count = roi.sum(dim=(1, 2))  # (B,)
        nonfinite = (~torch.isfinite(image) & inside).any(dim=(2, 3))  # (B, M)
        big = torch.finfo(image.dtype).max
        hi = torch.where(inside, image, -big).amax(dim=(2, 3))  # (B, M)
        lo = torch.where(inside, image, big).amin(dim=(2, 3))  # (B, M)
        constant = (hi <= lo) & (count[:, None] > 0)  # (B, M)
        if maps is not None:
            bad = torch.isnan(maps) | (torch.isposinf(maps) if log_maps
                                      else ~torch.isfinite(maps))
            bad_maps = (bad & inside).any(dim=(1, 2, 3))  # (B,)
        else:
            bad_maps = torch.zeros_like(count, dtype=torch.bool)
        flags = torch.stack([count < max(k, 2), nonfinite.any(dim=1), constant.any(dim=1),
                             bad_maps])  # (4, B)
        if not bool(flags.any()):
            return
        flags_list = flags.tolist()
    b = flags_list[0].index(True) if True in flags_list[0] else None
    if b is not None:
        raise InputError(f"slice {b}: the ROI has {int(count[b])} pixels, needs at least "
                         f"{max(k, 2)} for {k} classes (check the ROI mask)")
    if True in flags_list[1]:
        b = flags_list[1].index(True)
        m = int(torch.nonzero(nonfinite[b])[0])
        raise InputError(f"slice {b}, sequence {m}: image has NaN or infinite values "
                         "inside the ROI")
    if True in flags_list[2]:
        b = flags_list[2].index(True)
        m = int(torch.nonzero(constant[b])[0])
        raise InputError(f"slice {b}, sequence {m}: image is constant inside the ROI, "
                         "nothing to separate (check the sequence file and its scaling)")
    b = flags_list[3].index(True)
    raise InputError(f"slice {b}: {maps_name} has NaN or infinite values inside the ROI")


def _check_options(covariance: str, var_floor: float) -> None:
    if covariance not in ("diag", "full"):
        raise InputError(f"covariance must be 'diag' or 'full', got {covariance!r}")
    if not var_floor > 0.0:
        raise InputError(f"var_floor must be > 0, got {var_floor}")


def _zero_outside(values: torch.Tensor, roi: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` values with every pixel outside the ``(B, H, W)`` ROI set to 0.

    Keeps NaN or inf outside the ROI (padding, background) out of the sums and gradients.
    """
    return torch.where(roi.unsqueeze(1), values, torch.zeros((), dtype=values.dtype,
                                                             device=values.device))


def m_step(resp: torch.Tensor, image: torch.Tensor, roi: torch.Tensor, *,
           covariance: Covariance = "diag",
           var_floor: float = DEFAULT_VAR_FLOOR, validate: bool = True) -> MixtureParams:
    """Closed-form weights, means and (co)variances from responsibilities.

    Args:
        resp: ``(B, K, H, W)`` responsibilities p_nk (non-negative, sum to 1 over K).
        image: ``(B, M, H, W)`` pixel features.
        roi: ``(B, H, W)`` bool; only these pixels enter the sums.
        covariance: ``"diag"`` (variances) or ``"full"`` (covariance matrices).
        var_floor: added to each variance / to the covariance diagonal (> 0).
        validate: run :func:`check_inputs` (callers that already checked may skip it).

    Returns:
        :class:`MixtureParams` with ``weights (B, K)``, ``means (B, K, M)`` and
        ``covariances (B, K, M)`` or ``(B, K, M, M)``. A class with no mass gets mean 0,
        variance ``var_floor`` and weight 0.

    Raises:
        InputError: bad shapes, options or values (see :func:`check_inputs`).
    """
    _check_options(covariance, var_floor)
    if validate:
        check_inputs(image, roi, maps=resp, maps_name="resp")
    image = _zero_outside(image, roi)
    p = _zero_outside(resp, roi)  # (B, K, H, W)
    n_k = p.sum(dim=(2, 3))  # (B, K)
    n_roi = roi.sum(dim=(1, 2)).to(resp.dtype).clamp_min(1.0)  # (B,)
    weights = n_k / n_roi[:, None]
    denom = n_k + _mass_eps(resp.dtype)  # (B, K)
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
    """``(B, K, H, W)`` log N(x_n; mu_k, Sigma_k) for the given parameters.

    ``image`` is ``(B, M, H, W)``; values outside any ROI should be finite (callers zero
    them with the ROI first).
    """
    if params.covariance == "diag":
        return log_gaussian_diag(image, params.means, params.covariances)
    return log_gaussian_full(image, params.means, params.covariances)


def _masked_mean(values: torch.Tensor, roi: torch.Tensor) -> torch.Tensor:
    """Mean of ``(B, H, W)`` values over ROI pixels -> ``(B,)``; non-ROI values ignored."""
    mask = roi.to(values.dtype)
    safe = torch.where(roi, values, torch.zeros((), dtype=values.dtype, device=values.device))
    return (safe * mask).sum(dim=(1, 2)) / mask.sum(dim=(1, 2)).clamp_min(1.0)


def gmm_log_joint(image: torch.Tensor, params: MixtureParams) -> torch.Tensor:
    """``(B, K, H, W)`` log pi_k + log N(x_n; mu_k, Sigma_k) for ``image (B, M, H, W)``."""
    log_w = params.weights.clamp_min(torch.finfo(params.weights.dtype).tiny).log()
    return log_densities(image, params) + log_w[..., None, None]


def gmm_nll(resp: torch.Tensor, image: torch.Tensor, roi: torch.Tensor, *,
            covariance: Covariance = "diag", var_floor: float = DEFAULT_VAR_FLOOR,
            validate: bool = True) -> tuple[torch.Tensor, MixtureParams]:
    """deepG loss: GMM negative log-likelihood with parameters from the M-step.

    ``NLL = -(1/|Omega|) sum_n log sum_k pi_k N(x_n; mu_k, Sigma_k)``.

    Args:
        resp: ``(B, K, H, W)`` responsibilities (the network's softmax).
        image: ``(B, M, H, W)``.
        roi: ``(B, H, W)`` bool.
        covariance: ``"diag"`` or ``"full"``.
        var_floor: added to every variance (> 0).
        validate: run :func:`check_inputs` first.

    Returns:
        ``(nll (B,), params)``.

    Raises:
        InputError: bad shapes, options or values (see :func:`check_inputs`).
    """
    _check_options(covariance, var_floor)
    if validate:
        check_inputs(image, roi, maps=resp, maps_name="resp")
    params = m_step(resp, image, roi, covariance=covariance, var_floor=var_floor,
                    validate=False)
    log_mix = torch.logsumexp(gmm_log_joint(_zero_outside(image, roi), params), dim=1)
    return -_masked_mean(log_mix, roi), params


def svgmm_nll(log_resp: torch.Tensor, image: torch.Tensor, roi: torch.Tensor, *,
              covariance: Covariance = "diag", var_floor: float = DEFAULT_VAR_FLOOR,
              validate: bool = True) -> tuple[torch.Tensor, MixtureParams]:
    """deepSVG loss: spatially variant GMM negative log-likelihood.

    ``NLL_V = -(1/|Omega|) sum_n log sum_k p_nk N(x_n; mu_k, Sigma_k)`` with the per-pixel
    weights p_nk given as log-probabilities (e.g. ``log_softmax`` of the network's logits);
    means and (co)variances come from the M-step with the same p_nk.

    Args:
        log_resp: ``(B, K, H, W)`` log p_nk (``-inf`` allowed for p_nk = 0).
        image: ``(B, M, H, W)``.
        roi: ``(B, H, W)`` bool.
        covariance: ``"diag"`` or ``"full"``.
        var_floor: added to every variance (> 0).
        validate: run :func:`check_inputs` first.

    Returns:
        ``(nll (B,), params)``; ``params.weights`` holds the ROI-mean of p_nk.

    Raises:
        InputError: bad shapes, options or values (see :func:`check_inputs`).
    """
    _check_options(covariance, var_floor)
    if validate:
        check_inputs(image, roi, maps=log_resp, maps_name="log_resp", log_maps=True)
    log_resp = _zero_outside(log_resp, roi)
    params = m_step(log_resp.exp(), image, roi, covariance=covariance, var_floor=var_floor,
                    validate=False)
    log_mix = torch.logsumexp(log_resp + log_densities(_zero_outside(image, roi), params),
                              dim=1)
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
