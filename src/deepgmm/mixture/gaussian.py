"""Gaussian log-densities for every pixel and class, diagonal or full covariance.

All maths in log space; no loops over pixels, classes or sequences.
"""

from __future__ import annotations

import math

import torch

from deepgmm.errors import InputError

LOG_2PI = math.log(2.0 * math.pi)


def log_gaussian_diag(image: torch.Tensor, means: torch.Tensor,
                      variances: torch.Tensor) -> torch.Tensor:
    """Log-density of each pixel under each class, diagonal covariance.

    Args:
        image: ``(B, M, H, W)`` pixel features.
        means: ``(B, K, M)`` class means.
        variances: ``(B, K, M)`` class variances, already floored (> 0).

    Returns:
        ``(B, K, H, W)`` values of ``log N(x_n; mu_k, diag sigma2_k)``.
    """
    b, m, h, w = image.shape
    x = image.reshape(b, m, h * w)  # (B, M, HW)
    precision = 1.0 / variances  # (B, K, M)
    # sum_m (x_m - mu_km)^2 / s_km expanded into three small matrix products, as
    # scikit-learn does: no (B, K, M, HW) temporary.
    maha = (torch.bmm(precision, x.square()) - 2.0 * torch.bmm(means * precision, x)
            + (means.square() * precision).sum(dim=2, keepdim=True))  # (B, K, HW)
    log_det = variances.log().sum(dim=2, keepdim=True)  # (B, K, 1)
    out = -0.5 * (maha.clamp_min(0.0) + log_det + m * LOG_2PI)
    return out.reshape(b, -1, h, w)


def log_gaussian_full(image: torch.Tensor, means: torch.Tensor,
                      covariances: torch.Tensor) -> torch.Tensor:
    """Log-density of each pixel under each class, full covariance.

    Args:
        image: ``(B, M, H, W)`` pixel features.
        means: ``(B, K, M)`` class means.
        covariances: ``(B, K, M, M)`` symmetric positive definite (already floored).

    Returns:
        ``(B, K, H, W)`` values of ``log N(x_n; mu_k, Sigma_k)``.

    Raises:
        InputError: a covariance matrix is not positive definite.
    """
    b, m, h, w = image.shape
    chol, info = torch.linalg.cholesky_ex(covariances)  # (B, K, M, M), (B, K)
    if bool((info != 0).any()):
        bad = torch.nonzero(info != 0)[0].tolist()
        raise InputError(
            f"covariance of slice {bad[0]}, class {bad[1]} is not positive definite: "
            "increase var_floor, decrease the number of classes, or scale the data")
    diff = image.reshape(b, 1, m, h * w) - means[..., None]  # (B, K, M, HW)
    solved = torch.linalg.solve_triangular(chol, diff, upper=False)  # (B, K, M, HW)
    maha = solved.square().sum(dim=2)  # (B, K, HW)
    log_det = 2.0 * torch.diagonal(chol, dim1=-2, dim2=-1).log().sum(dim=-1)  # (B, K)
    out = -0.5 * (maha + log_det[..., None] + m * LOG_2PI)
    return out.reshape(b, -1, h, w)
