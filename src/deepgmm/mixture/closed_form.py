"""deepG / deepSVG losses for diagonal covariances with a closed-form backward pass.

The losses of :mod:`deepgmm.mixture.likelihood` differentiate through the M-step. Left to
autograd, one forward + backward is about forty small kernels and keeps several
``(B, K, N)`` temporaries alive. For diagonal covariances the whole gradient has a short
closed form, so this module computes it directly: four matrix products and a handful of
``(B, K, M)`` operations.

Notation (packed ROI pixels n, classes k, sequences m; p the responsibilities, r the
posterior of the fitted mixture, s = dL/d log-likelihood of pixel n = -g / |Omega|):

    N_k = sum_n p_nk + eps,  mu_km = sum_n p_nk x_nm / N_k,
    v_km = sum_n p_nk x_nm^2 / N_k - mu_km^2  (raw variance),  s2_km = max(v_km, 0) + floor

    dL/dmu_km = s sum_n r_nk (x_nm - mu_km) / s2_km              (+ incoming grad of mu)
    dL/ds2_km = s/2 sum_n r_nk ((x_nm - mu_km)^2 / s2_km^2 - 1/s2_km)  (+ incoming)
    dL/dpi_k  = s sum_n r_nk / pi_k  (deepG only)                 (+ incoming)

and through the M-step, with dmu/dp_nk = (x_nm - mu_km) / N_k and
dv/dp_nk = ((x_nm - mu_km)^2 - v_km) / N_k, dpi/dp_nk = 1 / |Omega|:

    dL/dp_nk = a_k + sum_m b_km x_nm + sum_m c_km x_nm^2

a polynomial in x_n, i.e. one matrix product of ``(B, K, 1 + 2M)`` coefficients with the
pixels' features ``[1, x, x^2]``. deepSVG takes log p: dL/dlog p_nk = p_nk dL/dp_nk +
s r_nk. The tests check both against autograd through the plain formulas.
"""

from __future__ import annotations

import math

import torch
from torch.autograd.function import once_differentiable

LOG_2PI = math.log(2.0 * math.pi)


def _features(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(B, 1 + 2M, N)`` rows ``[1, x_1..x_M, x_1^2..x_M^2]`` per packed pixel, 0 on
    padding, from ``x (B, M, N)`` (0 on padding) and ``mask (B, N)``."""
    return torch.cat([mask.unsqueeze(1).to(x.dtype), x, x.square()], dim=1)


class _DiagMixtureNLL(torch.autograd.Function):
    """Mean negative log-likelihood of a diagonal mixture whose parameters come from the
    M-step of the same responsibilities; outputs ``(nll (B,), weights (B, K),
    means (B, K, M), variances (B, K, M))``."""

    @staticmethod
    def forward(ctx, maps: torch.Tensor, x: torch.Tensor, mask: torch.Tensor,
                n_roi: torch.Tensor, var_floor: float, spatially_variant: bool,
                mass_eps: float):
        m = x.shape[1]
        feats = _features(x, mask)  # (B, 1 + 2M, N)
        inside = mask.unsqueeze(1).to(maps.dtype)  # (B, 1, N)
        # deepG's p is 0 on padding already; deepSVG's log p is finite there
        p = maps.exp() * inside if spatially_variant else maps  # (B, K, N)
        stats = torch.bmm(p, feats.transpose(1, 2))  # (B, K, 1 + 2M)
        n_k = stats[..., 0]  # (B, K)
        denom = n_k + mass_eps
        means = stats[..., 1:1 + m] / denom[..., None]  # (B, K, M)
        raw = stats[..., 1 + m:] / denom[..., None] - means.square()  # (B, K, M)
        variances = raw.clamp_min(0.0) + var_floor
        weights = n_k / n_roi[:, None]
        precision = 1.0 / variances
        # sum_m (x_m - mu_km)^2 / s2_km as one product with [1, x, x^2]; 0 on padding
        maha_coef = torch.cat([(means.square() * precision).sum(dim=2, keepdim=True),
                               -2.0 * means * precision, precision], dim=2)
        maha = torch.bmm(maha_coef, feats).clamp_min(0.0)  # (B, K, N)
        log_norm = -0.5 * (variances.log().sum(dim=2) + m * LOG_2PI)  # (B, K)
        if spatially_variant:
            log_joint = maps + (log_norm[..., None] - 0.5 * maha)
        else:
            log_w = weights.clamp_min(torch.finfo(weights.dtype).tiny).log()
            log_joint = (log_norm + log_w)[..., None] - 0.5 * maha
        # log sum_k exp(log_joint) = max_k log_joint - max_k log_post: both maxima are
        # attained by the same k, and max_k log_post lies in [-log K, 0], so nothing
        # cancels; one log_softmax is cheaper than logsumexp + a second exp for the
        # posterior on CPU
        log_post = torch.log_softmax(log_joint, dim=1)  # (B, K, N)
        log_mix = log_joint.amax(dim=1) - log_post.amax(dim=1)  # (B, N)
        nll = -(log_mix * inside.squeeze(1)).sum(dim=1) / n_roi
        post = log_post.exp() * inside  # (B, K, N), 0 on padding
        ctx.save_for_backward(p, feats, post, means, raw, variances, weights, denom, n_roi)
        ctx.spatially_variant = spatially_variant
        return nll, weights, means, variances

    @staticmethod
    @once_differentiable
    def backward(ctx, g_nll, g_weights, g_means, g_vars):
        p, feats, post, means, raw, variances, weights, denom, n_roi = ctx.saved_tensors
        m = means.shape[2]
        s = (-g_nll / n_roi)[:, None]  # (B, 1): dL/d log-likelihood of each ROI pixel
        r_stats = torch.bmm(post, feats.transpose(1, 2))  # (B, K, 1 + 2M)
        r0 = r_stats[..., 0]  # (B, K)
        r1 = r_stats[..., 1:1 + m]
        r2 = r_stats[..., 1 + m:]
        precision = 1.0 / variances
        centred1 = r1 - means * r0[..., None]  # sum_n r (x - mu)
        centred2 = r2 - 2.0 * means * r1 + means.square() * r0[..., None]  # sum_n r (x-mu)^2
        s3 = s[..., None]
        d_means = s3 * precision * centred1 + g_means
        d_vars = 0.5 * s3 * precision * (precision * centred2 - r0[..., None]) + g_vars
        d_raw = torch.where(raw > 0.0, d_vars, torch.zeros((), dtype=raw.dtype,
                                                            device=raw.device))
        d_weights = g_weights
        if not ctx.spatially_variant:
            tiny = torch.finfo(weights.dtype).tiny
            d_weights = d_weights + torch.where(weights > tiny, s * r0 / weights.clamp_min(tiny),
                                                torch.zeros_like(weights))
        quad = d_raw / denom[..., None]  # (B, K, M)
        lin_mu = d_means / denom[..., None]
        lin = lin_mu - 2.0 * quad * means
        const = (d_weights / n_roi[:, None] - (lin_mu * means).sum(dim=2)
                 + (quad * (means.square() - raw)).sum(dim=2))  # (B, K)
        grad_p = torch.bmm(torch.cat([const.unsqueeze(2), lin, quad], dim=2), feats)
        if ctx.spatially_variant:
            grad_maps = p * grad_p + s[..., None] * post
        else:
            grad_maps = grad_p
        return grad_maps, None, None, None, None, None, None


def diag_mixture_nll(maps: torch.Tensor, x: torch.Tensor, mask: torch.Tensor,
                     n_roi: torch.Tensor, *, var_floor: float, spatially_variant: bool,
                     mass_eps: float) -> tuple[torch.Tensor, ...]:
    """deepG (``spatially_variant=False``, ``maps`` = p) or deepSVG (``maps`` = log p)
    loss on packed ROI pixels, diagonal covariances, closed-form backward.

    Args:
        maps: ``(B, K, N)`` responsibilities p (deepG, 0 on padding) or log p (deepSVG,
            finite on padding).
        x: ``(B, M, N)`` features, 0 on padding.
        mask: ``(B, N)`` bool, which packed entries are ROI pixels.
        n_roi: ``(B,)`` ROI pixel counts (>= 1), dtype of ``maps``.
        var_floor: added to every variance.
        spatially_variant: deepSVG's NLL_V instead of deepG's NLL.
        mass_eps: added to the class masses before dividing.

    Returns:
        ``(nll (B,), weights (B, K), means (B, K, M), variances (B, K, M))``, all
        differentiable in ``maps`` (gradients of the parameters flow through the M-step).
    """
    return _DiagMixtureNLL.apply(maps, x, mask, n_roi, var_floor, spatially_variant,
                                 mass_eps)
