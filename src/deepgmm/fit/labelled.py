"""A few labelled slices in training: a cross-entropy term beside the unsupervised loss.

The μ_data penalty already needs the ground truth of a few training slices (10, drawn with
seed 42: :func:`deepgmm.data.mu_data.draw_slices`). With ``label_weight > 0`` the same
slices also teach the network directly: whenever one of them is in a mini-batch, the loss
gains ``label_weight`` times that slice's mean cross-entropy between the network's class
probabilities and its ground truth over the ROI (divided by the mini-batch size, as the
NLL is a mean over the mini-batch). The other slices contribute the deepG / deepSVG loss
only, so the label budget is the one μ_data already spends.
"""

from __future__ import annotations

import numpy as np
import torch

from deepgmm.data.mu_data import draw_slices
from deepgmm.errors import InputError
from deepgmm.types import SliceBatch


def labelled_targets(batch: SliceBatch, n_slices: int = 10, seed: int = 42,
                     ) -> tuple[torch.Tensor, np.ndarray]:
    """Ground truth of the drawn slices, nothing elsewhere.

    Args:
        batch: training slices with labels ``(B, H, W)`` (0 background, classes 1..K).
        n_slices: how many slices carry their labels (all when the batch has fewer).
        seed: seed of the draw (the μ_data draw when both are left at their defaults).

    Returns:
        ``target (B, H, W)`` int64: the class 1..K inside the ROI of a drawn slice, 0
        everywhere else; and the drawn slice indices (sorted).

    Raises:
        InputError: no labels, or ``n_slices < 1``.
    """
    if batch.labels is None:
        raise InputError("training with labelled slices needs ground truth, but the "
                         "training data have none")
    if isinstance(n_slices, bool) or int(n_slices) < 1:
        raise InputError(f"labelled slices must be at least 1, got {n_slices!r}")
    chosen = draw_slices(len(batch), n_slices, seed)
    drawn = torch.zeros(len(batch), dtype=torch.bool)
    drawn[torch.from_numpy(chosen)] = True
    keep = drawn[:, None, None] & batch.roi.bool()
    return torch.where(keep, batch.labels.long(), 0), chosen


def labelled_cross_entropy(log_resp: torch.Tensor, target: torch.Tensor,
                           roi: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the labelled ROI pixels of each slice.

    Args:
        log_resp: ``(B, K, H, W)`` log class probabilities.
        target: ``(B, H, W)`` int64, class 1..K where labelled, 0 where not.
        roi: ``(B, H, W)`` bool; only pixels inside it count.

    Returns:
        ``(B,)``: ``-mean log p(true class)`` over the slice's labelled ROI pixels; 0 for a
        slice without any.
    """
    valid = roi & (target > 0)
    index = (target - 1).clamp_min(0).unsqueeze(1)                         # (B, 1, H, W)
    picked = log_resp.gather(1, index).squeeze(1)                          # (B, H, W)
    total = -torch.where(valid, picked, 0.0).sum(dim=(1, 2))
    count = valid.sum(dim=(1, 2))
    return total / count.clamp_min(1)
