"""Training augmentation applied consistently to image, ROI and labels, batched on the device.

Three transforms, as in the published training code:

- random flips along each in-plane axis (image, ROI and labels alike);
- elastic deformation with the alpha / sigma convention of ``batchgenerators``: a
  displacement field of uniform noise in [-1, 1] per pixel, smoothed by a Gaussian of width
  ``sigma`` pixels (zero outside the crop) and scaled by ``alpha``; the image is resampled
  bilinearly (border values outside the crop), ROI and labels by nearest neighbour;
- additive Gaussian noise on the image only (``sigma`` up to 0.1, probability 0.15).

Everything is drawn per slice from one :class:`torch.Generator` (seeded by the caller) and
applied to the whole mini-batch at once with ``grid_sample``: no Python loops over slices.
MONAI's ``Rand2DElastic`` / ``RandGridDistortion`` work on one sample at a time and define the
field by control-point spacing and magnitude, so ``alpha`` in [0, 175] would not mean what it
meant in the published code; this module keeps that meaning and the batched device path.

Shapes: B slices, M sequences, H x W pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from deepgmm.errors import InputError


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of the augmentations.

    Attributes:
        alpha: range of the elastic scale (pixels per unit of smoothed noise), drawn per slice.
        sigma: range of the Gaussian smoothing width of the displacement, in pixels.
        p_elastic: probability that a slice is deformed.
        p_flip: probability of a flip, independently along each in-plane axis.
        noise_sigma: range of the noise standard deviation (image units: z-scores).
        p_noise: probability that a slice gets noise.
    """

    alpha: tuple[float, float] = (0.0, 175.0)
    sigma: tuple[float, float] = (9.0, 13.0)
    p_elastic: float = 1.0
    p_flip: float = 0.5
    noise_sigma: tuple[float, float] = (0.0, 0.1)
    p_noise: float = 0.15

    def __post_init__(self) -> None:
        for name in ("p_elastic", "p_flip", "p_noise"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise InputError(f"augmentation {name} must lie in [0, 1], got {value}")
        for name in ("alpha", "sigma", "noise_sigma"):
            lo, hi = getattr(self, name)
            if not 0.0 <= lo <= hi:
                raise InputError(f"augmentation {name} must be a range 0 <= low <= high, "
                                 f"got ({lo}, {hi})")
        if self.sigma[0] <= 0.0:
            raise InputError(f"augmentation sigma must be > 0, got {self.sigma}")


def _uniform(n: int, low: float, high: float, generator: torch.Generator,
             device: torch.device) -> torch.Tensor:
    """``(n,)`` draws from U[low, high)."""
    return low + (high - low) * torch.rand(n, generator=generator, device=device)


def _bernoulli(n: int, p: float, generator: torch.Generator,
               device: torch.device) -> torch.Tensor:
    """``(n,)`` bool, each True with probability p."""
    return torch.rand(n, generator=generator, device=device) < p


def smooth_displacement(noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Gaussian-smooth each slice's displacement field with its own width (zero padding).

    Args:
        noise: ``(B, 2, H, W)`` raw displacement noise.
        sigma: ``(B,)`` smoothing widths in pixels (> 0).

    Returns:
        ``(B, 2, H, W)`` smoothed field; separable convolution, one kernel per slice via a
        grouped convolution, kernels truncated at 4 sigma.
    """
    b, c, h, w = noise.shape
    radius = int(math.ceil(4.0 * float(sigma.max())))
    offsets = torch.arange(-radius, radius + 1, device=noise.device, dtype=noise.dtype)
    kernel = torch.exp(-0.5 * (offsets[None, :] / sigma[:, None].to(noise.dtype)) ** 2)
    kernel = kernel / kernel.sum(dim=1, keepdim=True)  # (B, 2r+1)
    kernel = kernel.repeat_interleave(c, dim=0)  # (B*C, 2r+1), channel-major per slice
    x = noise.reshape(1, b * c, h, w)
    x = F.conv2d(x, kernel[:, None, :, None], padding=(radius, 0), groups=b * c)
    x = F.conv2d(x, kernel[:, None, None, :], padding=(0, radius), groups=b * c)
    return x.reshape(b, c, h, w)


def _flip(x: torch.Tensor, flip_h: torch.Tensor, flip_w: torch.Tensor) -> torch.Tensor:
    """Flip slices of ``(B, ..., H, W)`` along H and/or W where the ``(B,)`` masks say so."""
    shape = (-1,) + (1,) * (x.ndim - 1)
    x = torch.where(flip_h.view(shape), x.flip(-2), x)
    return torch.where(flip_w.view(shape), x.flip(-1), x)


def augment_batch(image: torch.Tensor, roi: torch.Tensor, labels: torch.Tensor | None = None,
                  *, generator: torch.Generator, config: AugmentConfig | None = None,
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Apply flips, elastic deformation and noise to a mini-batch, consistently.

    Args:
        image: ``(B, M, H, W)`` float image.
        roi: ``(B, H, W)`` bool region of interest.
        labels: ``(B, H, W)`` int64 class indices, or ``None``.
        generator: source of randomness, on the same device as ``image``.
        config: probabilities and ranges (:class:`AugmentConfig` defaults when ``None``).

    Returns:
        ``(image (B, M, H, W), roi (B, H, W) bool, labels (B, H, W) int64 or None)``; the
        inputs are not modified.
    """
    cfg = config or AugmentConfig()
    if image.ndim != 4:
        raise InputError(f"image must be (B, M, H, W), got shape {tuple(image.shape)}")
    b, _, h, w = image.shape
    if roi.shape != (b, h, w):
        raise InputError(f"roi must be (B, H, W) = {(b, h, w)}, got {tuple(roi.shape)}")
    if labels is not None and labels.shape != (b, h, w):
        raise InputError(f"labels must be (B, H, W) = {(b, h, w)}, got {tuple(labels.shape)}")
    dev = image.device

    flip_h = _bernoulli(b, cfg.p_flip, generator, dev)
    flip_w = _bernoulli(b, cfg.p_flip, generator, dev)
    elastic = _bernoulli(b, cfg.p_elastic, generator, dev)
    alpha = _uniform(b, *cfg.alpha, generator, dev) * elastic
    sigma = _uniform(b, *cfg.sigma, generator, dev)
    raw = 2.0 * torch.rand((b, 2, h, w), generator=generator, device=dev) - 1.0
    noisy = _bernoulli(b, cfg.p_noise, generator, dev)
    noise_sd = _uniform(b, *cfg.noise_sigma, generator, dev) * noisy
    noise = torch.randn(image.shape, generator=generator, device=dev)

    out_image = _flip(image, flip_h, flip_w)
    out_roi = _flip(roi, flip_h, flip_w)
    out_labels = None if labels is None else _flip(labels, flip_h, flip_w)

    if bool((alpha > 0).any()):
        disp = smooth_displacement(raw.to(image.dtype), sigma) * alpha[:, None, None, None]
        # Pixel displacement -> normalised grid units (align_corners=True: 2 / (size - 1)).
        scale = torch.tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)], device=dev,
                             dtype=image.dtype)
        ys = torch.linspace(-1.0, 1.0, h, device=dev, dtype=image.dtype)
        xs = torch.linspace(-1.0, 1.0, w, device=dev, dtype=image.dtype)
        base = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (H, W, 2) = (x, y)
        # disp channel 0 moves along H (y), channel 1 along W (x).
        grid = base + disp.flip(1).permute(0, 2, 3, 1) * scale  # (B, H, W, 2)
        grid = torch.where(elastic[:, None, None, None], grid, base.expand(b, h, w, 2))
        warped = F.grid_sample(out_image, grid, mode="bilinear", padding_mode="border",
                               align_corners=True)
        out_image = torch.where(elastic[:, None, None, None], warped, out_image)
        discrete = out_roi[:, None].to(image.dtype)
        if out_labels is not None:
            discrete = torch.cat([discrete, out_labels[:, None].to(image.dtype)], dim=1)
        moved = F.grid_sample(discrete, grid, mode="nearest", padding_mode="zeros",
                              align_corners=True)
        moved = torch.where(elastic[:, None, None, None], moved, discrete)
        out_roi = moved[:, 0] > 0.5
        if out_labels is not None:
            out_labels = moved[:, 1].round().to(labels.dtype)  # type: ignore[union-attr]

    out_image = out_image + noise_sd[:, None, None, None].to(image.dtype) * noise.to(image.dtype)
    return out_image, out_roi, out_labels
