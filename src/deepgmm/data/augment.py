"""Training augmentation applied consistently to image, ROI and labels, batched on the device.

The transforms and probabilities of the published training code (its ``SpatialTransform``
with ``alpha = (0, 175)`` and otherwise default settings, its flips and its noise):

- elastic deformation with the alpha / sigma convention of ``batchgenerators`` (probability
  0.2): a displacement field of uniform noise in [-1, 1] per pixel, smoothed by a Gaussian
  of width ``sigma`` pixels (zero outside the crop) and scaled by ``alpha``;
- rotation about the crop centre by an angle drawn from [0, 2 pi) (probability 0.2);
- isotropic scaling by a factor drawn, with equal chance, from [0.7, 1) or [1, 1.4)
  (probability 0.2);
- one flip (probability 2/3), left-right or top-bottom with equal chance;
- additive Gaussian noise on the image only, per sequence (probability 0.15, ``sigma`` up to
  0.1).

The three spatial transforms compose into one sampling grid (displacement, then rotation,
then scaling of the centred pixel coordinates, as the published code composes them); the
image is resampled bilinearly (border values outside the crop), ROI and labels by nearest
neighbour (background outside). The published code resamples the whole image before
cropping and with cubic splines; here the crop is resampled, so rotated or zoomed-out
corners repeat the crop's border.

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
    """Probabilities and ranges of the augmentations (defaults: the published settings).

    Attributes:
        alpha: range of the elastic scale (pixels per unit of smoothed noise), drawn per slice.
        sigma: range of the Gaussian smoothing width of the displacement, in pixels.
        p_elastic: probability that a slice is deformed.
        angle: range of the rotation angle, radians.
        p_rotate: probability that a slice is rotated.
        scale: range of the scaling factor of the sampling coordinates; when it spans 1, a
            factor below and one above 1 are equally likely.
        p_scale: probability that a slice is scaled.
        p_flip: probability that a slice is flipped along one in-plane axis (chosen at random).
        noise_sigma: range of the noise standard deviation (image units: z-scores).
        p_noise: probability that a sequence of a slice gets noise.
    """

    alpha: tuple[float, float] = (0.0, 175.0)
    sigma: tuple[float, float] = (9.0, 13.0)
    p_elastic: float = 0.2
    angle: tuple[float, float] = (0.0, 2.0 * math.pi)
    p_rotate: float = 0.2
    scale: tuple[float, float] = (0.7, 1.4)
    p_scale: float = 0.2
    p_flip: float = 2.0 / 3.0
    noise_sigma: tuple[float, float] = (0.0, 0.1)
    p_noise: float = 0.15

    def __post_init__(self) -> None:
        for name in ("p_elastic", "p_rotate", "p_scale", "p_flip", "p_noise"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise InputError(f"augmentation {name} must lie in [0, 1], got {value}")
        for name in ("alpha", "sigma", "noise_sigma", "angle", "scale"):
            lo, hi = getattr(self, name)
            if not 0.0 <= lo <= hi:
                raise InputError(f"augmentation {name} must be a range 0 <= low <= high, "
                                 f"got ({lo}, {hi})")
        if self.sigma[0] <= 0.0:
            raise InputError(f"augmentation sigma must be > 0, got {self.sigma}")
        if self.scale[0] <= 0.0:
            raise InputError(f"augmentation scale must be > 0, got {self.scale}")


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


def _scale_factors(n: int, low: float, high: float, generator: torch.Generator,
                   device: torch.device) -> torch.Tensor:
    """``(n,)`` factors as the published code draws them: when [low, high] spans 1, from
    [low, 1) or [1, high) with equal chance, otherwise from [low, high)."""
    below = _uniform(n, low, min(high, 1.0), generator, device)
    above = _uniform(n, max(low, 1.0), high, generator, device)
    pick_below = torch.rand(n, generator=generator, device=device) < 0.5
    if low >= 1.0:
        return above
    if high <= 1.0:
        return below
    return torch.where(pick_below, below, above)


def augment_batch(image: torch.Tensor, roi: torch.Tensor, labels: torch.Tensor | None = None,
                  *, generator: torch.Generator, config: AugmentConfig | None = None,
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Apply the spatial transforms, a flip and noise to a mini-batch, consistently.

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
    b, m, h, w = image.shape
    if roi.shape != (b, h, w):
        raise InputError(f"roi must be (B, H, W) = {(b, h, w)}, got {tuple(roi.shape)}")
    if labels is not None and labels.shape != (b, h, w):
        raise InputError(f"labels must be (B, H, W) = {(b, h, w)}, got {tuple(labels.shape)}")
    dev, dtype = image.device, image.dtype

    elastic = _bernoulli(b, cfg.p_elastic, generator, dev)
    alpha = _uniform(b, *cfg.alpha, generator, dev) * elastic
    sigma = _uniform(b, *cfg.sigma, generator, dev)
    raw = 2.0 * torch.rand((b, 2, h, w), generator=generator, device=dev) - 1.0
    rotate = _bernoulli(b, cfg.p_rotate, generator, dev)
    angle = _uniform(b, *cfg.angle, generator, dev) * rotate
    scaled = _bernoulli(b, cfg.p_scale, generator, dev)
    factor = torch.where(scaled, _scale_factors(b, *cfg.scale, generator, dev),
                         torch.ones((), device=dev))
    flip = _bernoulli(b, cfg.p_flip, generator, dev)
    along_h = torch.rand(b, generator=generator, device=dev) < 0.5
    flip_h, flip_w = flip & along_h, flip & ~along_h
    noisy = torch.rand((b, m), generator=generator, device=dev) < cfg.p_noise
    noise_sd = (cfg.noise_sigma[0] + (cfg.noise_sigma[1] - cfg.noise_sigma[0])
                * torch.rand((b, m), generator=generator, device=dev)) * noisy
    noise = torch.randn(image.shape, generator=generator, device=dev)

    out_image, out_roi, out_labels = image, roi, labels
    moved = (alpha > 0) | rotate | scaled  # (B,)
    if bool(moved.any()):
        # Centred pixel coordinates (y, x) of every output pixel, as in the published code:
        # + elastic displacement, then rotation, then scaling, then back to the crop.
        ys = torch.arange(h, device=dev, dtype=dtype) - (h - 1) / 2.0
        xs = torch.arange(w, device=dev, dtype=dtype) - (w - 1) / 2.0
        coords = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1)  # (H, W, 2)
        coords = coords.expand(b, h, w, 2)
        if bool((alpha > 0).any()):
            disp = smooth_displacement(raw.to(dtype), sigma) * alpha[:, None, None, None]
            coords = coords + disp.permute(0, 2, 3, 1).to(dtype)  # channel 0: H, 1: W
        cos, sin = torch.cos(angle).to(dtype), torch.sin(angle).to(dtype)
        rot = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
        coords = torch.einsum("bhwi,bij->bhwj", coords, rot) * factor.to(dtype)[:, None, None,
                                                                                None]
        # (y, x) pixels -> grid_sample's normalised (x, y) (align_corners=True)
        norm = torch.tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)], device=dev,
                            dtype=dtype)
        grid = coords.flip(-1) * norm  # (B, H, W, 2)
        keep = ~moved[:, None, None, None]
        warped = F.grid_sample(image, grid, mode="bilinear", padding_mode="border",
                               align_corners=True)
        out_image = torch.where(keep, image, warped)
        discrete = roi[:, None].to(dtype)
        if labels is not None:
            discrete = torch.cat([discrete, labels[:, None].to(dtype)], dim=1)
        resampled = F.grid_sample(discrete, grid, mode="nearest", padding_mode="zeros",
                                  align_corners=True)
        resampled = torch.where(keep, discrete, resampled)
        out_roi = resampled[:, 0] > 0.5
        if labels is not None:
            out_labels = resampled[:, 1].round().to(labels.dtype)

    out_image = _flip(out_image, flip_h, flip_w)
    out_roi = _flip(out_roi, flip_h, flip_w)
    out_labels = None if out_labels is None else _flip(out_labels, flip_h, flip_w)
    out_image = out_image + noise_sd[:, :, None, None].to(dtype) * noise.to(dtype)
    return out_image, out_roi, out_labels
