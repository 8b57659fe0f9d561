"""Tiny synthetic slices with known regions for the fitting tests."""

from __future__ import annotations

import numpy as np
import torch

from deepgmm.types import SliceBatch

MEANS = torch.tensor([[0.0, 0.0, 0.0],  # background (outside the ROI when used)
                      [2.0, 0.0, 1.0],
                      [-1.0, -1.0, -1.0],
                      [0.0, 2.0, 2.0],
                      [1.0, 3.0, -1.0]])
"""``(5, 3)`` mean intensity of each label (row 0 unused inside the ROI)."""


def region_batch(n: int, *, n_regions: int = 2, size: int = 16, noise: float = 0.3,
                 seed: int = 0, case_prefix: str = "c") -> SliceBatch:
    """``n`` slices of ``size x size`` pixels, 3 sequences, split into 2 halves or 4 quadrants.

    Label l (1..n_regions) has mean ``MEANS[l]`` plus Gaussian noise of std ``noise``; the ROI
    is the whole slice. Slice i has case id ``f"{case_prefix}{i}"`` and slice index i.
    """
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    if n_regions == 2:
        lab = 1 + (xx >= size // 2).long()
    elif n_regions == 4:
        lab = 1 + 2 * (yy >= size // 2).long() + (xx >= size // 2).long()
    else:
        raise ValueError("n_regions must be 2 or 4")
    labels = lab.expand(n, size, size).clone()
    image = MEANS[labels].permute(0, 3, 1, 2) + noise * torch.randn(n, 3, size, size,
                                                                    generator=g)
    return SliceBatch(image=image.float(), roi=torch.ones(n, size, size, dtype=torch.bool),
                      labels=labels, case_ids=[f"{case_prefix}{i}" for i in range(n)],
                      slice_indices=list(range(n)),
                      crop_origins=np.zeros((n, 2), dtype=np.int64),
                      full_shapes=np.full((n, 2), size, dtype=np.int64),
                      sequences=("A", "B", "C"), spacing=np.ones((n, 2)))


def subset(batch: SliceBatch, index: list[int]) -> SliceBatch:
    """The slices ``index`` of ``batch`` (same case ids and slice indices)."""
    idx = torch.tensor(index)
    return SliceBatch(image=batch.image[idx], roi=batch.roi[idx],
                      labels=None if batch.labels is None else batch.labels[idx],
                      case_ids=[batch.case_ids[i] for i in index],
                      slice_indices=[batch.slice_indices[i] for i in index],
                      crop_origins=batch.crop_origins[index],
                      full_shapes=batch.full_shapes[index], sequences=batch.sequences,
                      spacing=batch.spacing[index])


def best_dice_two(resp: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """``(B,)`` mean Dice of a K = 2 fit on a two-region batch, best of the two assignments."""
    pred = resp.argmax(dim=1) + 1  # (B, H, W) in 1..2
    out = []
    for assign in (pred, 3 - pred):
        d = []
        for c in (1, 2):
            p, t = assign == c, labels == c
            d.append(2.0 * (p & t).sum(dim=(1, 2)) / (p.sum(dim=(1, 2)) + t.sum(dim=(1, 2))))
        out.append(torch.stack(d).mean(dim=0))
    return torch.stack(out).amax(dim=0).numpy()
