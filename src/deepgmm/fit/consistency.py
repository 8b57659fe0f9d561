"""Consistency regularisation on unlabelled slices (the Π-model of Laine & Aila, 2017).

The network should give the same class probabilities to a slice and to a perturbed view
of it. The second view of a mini-batch turns the (already augmented) slices by one of the
three shape-preserving flips — rows, columns, or both (a turn by 180°), drawn per
mini-batch — and jitters each slice's sequences in intensity: ``x' = x · exp(g) + b + e``
with ``g, b ~ N(0, 0.1²)`` per slice and sequence and ``e ~ N(0, 0.05²)`` per pixel (the
images are z-scored, so these are in units of the normalised intensity). The network's
probabilities on the view are flipped back, and the term is the mean over ROI pixels of

    || p_n - p'_n ||²,

the Π-model's squared difference of the two probability vectors (in [0, 2]). Gradients flow
through both views. Training adds ``consistency_weight`` times its mean over the
mini-batch (:func:`deepgmm.fit.train.train_network`); it needs no labels, so it acts on
every slice, and the mixture likelihood sees the first view only.

Shapes: B slices, M sequences, K classes, H x W pixels.
"""

from __future__ import annotations

import torch

from deepgmm.errors import InputError

GAIN_SD = 0.1
"""Standard deviation of the log gain ``g`` per slice and sequence."""
BIAS_SD = 0.1
"""Standard deviation of the offset ``b`` per slice and sequence."""
NOISE_SD = 0.05
"""Standard deviation of the pixel noise ``e``."""

FLIPS: tuple[tuple[int, ...], ...] = ((-2,), (-1,), (-2, -1))
"""The view's flips: rows, columns, both."""


def second_view(image: torch.Tensor, roi: torch.Tensor, generator: torch.Generator,
                ) -> tuple[torch.Tensor, torch.Tensor, tuple[int, ...]]:
    """A flipped, intensity-jittered view of a mini-batch.

    Args:
        image: ``(B, M, H, W)`` float.
        roi: ``(B, H, W)`` bool.
        generator: draws the flip and the jitter (on ``image``'s device).

    Returns:
        ``(B, M, H, W)`` view, ``(B, H, W)`` its ROI, and the flipped dims (undo with
        ``torch.flip(x, dims)`` on a ``(B, K, H, W)`` map).
    """
    if image.ndim != 4 or roi.shape != (image.shape[0], *image.shape[2:]):
        raise InputError(f"second_view needs image (B, M, H, W) and roi (B, H, W), got "
                         f"{tuple(image.shape)} and {tuple(roi.shape)}")
    dev = image.device
    pick = int(torch.randint(len(FLIPS), (1,), generator=generator, device=dev))
    dims = FLIPS[pick]
    b, m = image.shape[:2]
    gain = torch.exp(GAIN_SD * torch.randn(b, m, 1, 1, generator=generator, device=dev))
    bias = BIAS_SD * torch.randn(b, m, 1, 1, generator=generator, device=dev)
    noise = NOISE_SD * torch.randn(image.shape, generator=generator, device=dev)
    view = torch.flip(image * gain + bias + noise, dims)
    return view, torch.flip(roi, dims), dims


def consistency_loss(log_resp: torch.Tensor, log_resp_view: torch.Tensor,
                     roi: torch.Tensor) -> torch.Tensor:
    """Per-slice mean over ROI pixels of ``||p - p'||²``.

    Args:
        log_resp: ``(B, K, H, W)`` log class probabilities of the slices.
        log_resp_view: ``(B, K, H, W)`` those of the view, already flipped back.
        roi: ``(B, H, W)`` bool.

    Returns:
        ``(B,)`` values in [0, 2]; 0 for a slice with an empty ROI.
    """
    if log_resp.shape != log_resp_view.shape or log_resp.ndim != 4 or \
            roi.shape != (log_resp.shape[0], *log_resp.shape[2:]):
        raise InputError(f"consistency_loss needs two (B, K, H, W) maps and roi (B, H, W), "
                         f"got {tuple(log_resp.shape)}, {tuple(log_resp_view.shape)} and "
                         f"{tuple(roi.shape)}")
    roi = roi.to(torch.bool)
    sq = (log_resp.exp() - log_resp_view.exp()).square().sum(dim=1)  # (B, H, W)
    total = torch.where(roi, sq, 0.0).sum(dim=(1, 2))
    return total / roi.sum(dim=(1, 2)).clamp_min(1).to(total.dtype)
