"""Soft Potts energy: a hand-computed case, bounds, ROI masking, gradient."""

from __future__ import annotations

import pytest
import torch

from deepgmm.errors import InputError
from deepgmm.fit.potts import potts_energy


def test_hand_computed_two_by_two() -> None:
    """2 x 2 pixels, K = 2, all in the ROI: pairs (a, b), (c, d) horizontal and (a, c),
    (b, d) vertical, with p = (1, 0), (0, 1), (0.5, 0.5), (0.5, 0.5)."""
    p0 = torch.tensor([[1.0, 0.0], [0.5, 0.5]])  # class 0 at a, b / c, d
    resp = torch.stack([p0, 1.0 - p0])[None]  # (1, 2, 2, 2)
    roi = torch.ones(1, 2, 2, dtype=torch.bool)
    # <a,b> = 0, <c,d> = 0.5, <a,c> = 0.5, <b,d> = 0.5: costs 1, 0.5, 0.5, 0.5 -> mean 0.625
    assert float(potts_energy(resp, roi)[0]) == pytest.approx(0.625)
    # Without pixel d in the ROI only (a, b) and (a, c) remain: (1 + 0.5) / 2.
    roi[0, 1, 1] = False
    assert float(potts_energy(resp, roi)[0]) == pytest.approx(0.75)


def test_bounds_masking_and_empty_roi() -> None:
    g = torch.Generator().manual_seed(0)
    resp = torch.softmax(torch.randn(3, 4, 9, 11, generator=g), dim=1)
    roi = torch.rand(3, 9, 11, generator=g) < 0.6
    roi[2] = False
    energy = potts_energy(resp, roi)
    assert energy.shape == (3,)
    assert bool((energy[:2] > 0).all() & (energy[:2] <= 1).all())
    assert float(energy[2]) == 0.0  # no pair inside the ROI
    # Agreeing one-hot neighbours cost nothing; values outside the ROI do not count.
    onehot = torch.zeros(3, 4, 9, 11)
    onehot[:, 2] = 1.0
    onehot[0, :, ~roi[0]] = 0.25
    assert torch.equal(potts_energy(onehot, roi), torch.zeros(3))
    # A straight vertical boundary between two hard classes: 9 of the 9*10 + 8*11 pairs.
    split = torch.zeros(1, 2, 9, 11)
    split[0, 0, :, :5] = 1.0
    split[0, 1, :, 5:] = 1.0
    full = torch.ones(1, 9, 11, dtype=torch.bool)
    assert float(potts_energy(split, full)[0]) == pytest.approx(9 / (9 * 10 + 8 * 11))


def test_gradient_matches_finite_differences() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    roi = torch.rand(2, 5, 6, generator=g) < 0.7

    def energy(x: torch.Tensor) -> torch.Tensor:
        return potts_energy(torch.softmax(x, dim=1), roi)

    assert torch.autograd.gradcheck(energy, (logits,), eps=1e-6, atol=1e-7)


def test_bad_shapes_refused() -> None:
    with pytest.raises(InputError, match="potts_energy needs resp"):
        potts_energy(torch.ones(1, 2, 3, 3), torch.ones(1, 3, 4, dtype=torch.bool))
