"""Gaussian smoothing of per-pixel class weights inside the ROI (a spatial prior for EM).

Written here rather than taken from MONAI's ``GaussianFilter`` because it must be a
*normalised* convolution restricted to the ROI (pixels outside the ROI neither contribute
nor dilute), and because importing MONAI costs seconds on a path that runs in milliseconds.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def gaussian_kernel1d(sigma: float, dtype: torch.dtype = torch.float32,
                      device: torch.device | None = None) -> torch.Tensor:
    """Normalised 1-D Gaussian ``(2r + 1,)`` with radius ``r = ceil(3 sigma)``."""
    radius = max(int(math.ceil(3.0 * sigma)), 1)
    t = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    return kernel / kernel.sum()


def _separable_blur(values: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Blur ``(B, C, H, W)`` along H and W with the 1-D ``kernel`` (zero padding)."""
    c = values.shape[1]
    r = (kernel.shape[0] - 1) // 2
    rows = kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1)
    cols = kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1)
    out = F.conv2d(values, rows, padding=(r, 0), groups=c)
    return F.conv2d(out, cols, padding=(0, r), groups=c)


def smooth_weights(weights: torch.Tensor, roi: torch.Tensor, sigma: float) -> torch.Tensor:
    """Smooth per-pixel class weights with a Gaussian inside the ROI and renormalise.

    ``w'_nk ∝ sum_{n' in ROI} G_sigma(n - n') w_n'k / sum_{n' in ROI} G_sigma(n - n')``,
    then ``w'_n`` is normalised to sum to 1 over k. Outside the ROI the result is 0.

    Args:
        weights: ``(B, K, H, W)`` non-negative weights (values outside the ROI are ignored).
        roi: ``(B, H, W)`` bool.
        sigma: standard deviation in pixels; 0 returns ``weights`` unchanged.

    Returns:
        ``(B, K, H, W)`` smoothed weights summing to 1 over K inside the ROI.
    """
    if sigma <= 0:
        return weights
    kernel = gaussian_kernel1d(sigma, weights.dtype, weights.device)
    inside = roi.unsqueeze(1).to(weights.dtype)  # (B, 1, H, W)
    num = _separable_blur(torch.where(roi.unsqueeze(1), weights, 0.0), kernel)
    den = _separable_blur(inside, kernel).clamp_min(torch.finfo(weights.dtype).tiny)
    smoothed = num / den
    total = smoothed.sum(dim=1, keepdim=True).clamp_min(torch.finfo(weights.dtype).tiny)
    return torch.where(roi.unsqueeze(1), smoothed / total, 0.0)
