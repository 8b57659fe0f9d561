"""A Potts (pairwise Markov random field) prior on the responsibilities, as a loss term.

Neighbouring pixels of the same tissue should get the same class. With responsibilities
``p_n`` (the network's class probabilities), the soft Potts energy of a slice is the mean
over the 4-neighbour pixel pairs ``(n, n')`` with both pixels inside the ROI of

    1 - <p_n, p_n'>,

the probability that the two pixels get different classes when each draws its class from
its own ``p``. It is 0 when neighbours agree with certainty and at most 1; it penalises
boundaries by their length, as the Potts model of an MRF segmentation does, and is
differentiable in ``p``. Training adds ``potts_weight`` times its mean over the
mini-batch's slices to the deepG / deepSVG loss (:func:`deepgmm.fit.train.train_network`);
the mixture likelihood is unchanged.

Shapes: B slices, K classes, H x W pixels.
"""

from __future__ import annotations

import torch

from deepgmm.errors import InputError


def potts_energy(resp: torch.Tensor, roi: torch.Tensor) -> torch.Tensor:
    """Per-slice soft Potts energy: mean of ``1 - <p_n, p_n'>`` over the ROI's 4-neighbour
    pairs.

    Args:
        resp: ``(B, K, H, W)`` class probabilities (summing to 1 over K inside the ROI).
        roi: ``(B, H, W)`` bool.

    Returns:
        ``(B,)`` energies in [0, 1]; 0 for a slice without a neighbour pair in its ROI.
    """
    if resp.ndim != 4 or roi.shape != (resp.shape[0], *resp.shape[2:]):
        raise InputError(f"potts_energy needs resp (B, K, H, W) and roi (B, H, W), got "
                         f"{tuple(resp.shape)} and {tuple(roi.shape)}")
    roi = roi.to(torch.bool)
    # Vertical pairs (n, n + one row) and horizontal pairs (n, n + one column).
    agree_v = (resp[:, :, 1:, :] * resp[:, :, :-1, :]).sum(dim=1)  # (B, H-1, W)
    agree_h = (resp[:, :, :, 1:] * resp[:, :, :, :-1]).sum(dim=1)  # (B, H, W-1)
    both_v = roi[:, 1:, :] & roi[:, :-1, :]
    both_h = roi[:, :, 1:] & roi[:, :, :-1]
    cost = (torch.where(both_v, 1.0 - agree_v, 0.0).sum(dim=(1, 2))
            + torch.where(both_h, 1.0 - agree_h, 0.0).sum(dim=(1, 2)))
    pairs = both_v.sum(dim=(1, 2)) + both_h.sum(dim=(1, 2))
    return cost / pairs.clamp_min(1).to(cost.dtype)
