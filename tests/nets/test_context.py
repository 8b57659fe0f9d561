"""ROI context channels: exact distances (SciPy reference), hand-computed radius, symmetry."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.ndimage import distance_transform_edt

from deepgmm.errors import InputError
from deepgmm.nets.context import (
    CONTEXTS,
    border_distance,
    context_channels,
    n_context_channels,
    network_input,
    normalised_distance,
    normalised_radius,
)
from deepgmm.nets.tta import apply_transform, symmetries


def _scipy_distance(roi: np.ndarray) -> np.ndarray:
    """SciPy's EDT of every slice of ``(B, H, W)``, the crop padded by one outside pixel."""
    return np.stack([distance_transform_edt(np.pad(r, 1))[1:-1, 1:-1] for r in roi])


def _disc(h: int, w: int, cy: float, cx: float, radius: float) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return (ys - cy) ** 2 + (xs - cx) ** 2 < radius**2


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3), st.integers(1, 12), st.integers(1, 12), st.floats(0.0, 1.0),
       st.integers(0, 2**31 - 1))
def test_border_distance_is_scipys_edt(b: int, h: int, w: int, fill: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    roi = rng.random((b, h, w)) < fill
    ours = border_distance(torch.as_tensor(roi)).numpy()
    assert ours.dtype == np.float32 and ours.shape == (b, h, w)
    np.testing.assert_allclose(ours, _scipy_distance(roi), rtol=1e-6, atol=1e-6)


def test_border_distance_of_a_disc_and_at_the_crop_edge() -> None:
    roi = torch.stack([_disc(40, 48, 20.0, 22.0, 12.0), torch.ones(40, 48, dtype=torch.bool)])
    ours = border_distance(roi).numpy()
    np.testing.assert_allclose(ours, _scipy_distance(roi.numpy()), rtol=1e-6, atol=1e-6)
    # A full crop: the pixels beyond the edges are outside, so the corner pixel is 1 away
    # and the centre ones min(row + 1, H - row, col + 1, W - col).
    assert ours[1, 0, 0] == 1.0 and ours[1, 19, 23] == 20.0
    assert ours[0, 0, 0] == 0.0  # outside the disc


def test_normalised_distance_peaks_at_one_and_handles_an_empty_slice() -> None:
    roi = torch.stack([_disc(32, 32, 15.0, 16.0, 9.0), torch.zeros(32, 32, dtype=torch.bool)])
    dist = normalised_distance(roi)
    assert float(dist[0].max()) == pytest.approx(1.0)
    assert float(dist[0][~roi[0]].abs().max()) == 0.0
    assert float(dist[0][roi[0]].min()) == pytest.approx(1.0 / float(border_distance(roi)[0]
                                                                     .max()))
    assert torch.equal(dist[1], torch.zeros(32, 32))


def test_radius_by_hand() -> None:
    """A 2 x 2 ROI at rows 1-2, columns 1-2 of a 4 x 5 crop: centroid (1.5, 1.5), area 4,
    equivalent radius sqrt(4 / pi)."""
    roi = torch.zeros(2, 4, 5, dtype=torch.bool)
    roi[0, 1:3, 1:3] = True
    r = normalised_radius(roi)
    scale = math.sqrt(4.0 / math.pi)
    assert float(r[0, 0, 0]) == pytest.approx(math.sqrt(1.5**2 + 1.5**2) / scale, rel=1e-6)
    assert float(r[0, 1, 1]) == pytest.approx(math.sqrt(0.5) / scale, rel=1e-6)
    assert float(r[0, 3, 4]) == pytest.approx(math.sqrt(1.5**2 + 2.5**2) / scale, rel=1e-6)
    assert torch.equal(r[1], torch.zeros(4, 5))  # empty ROI
    # About 1 at the border of a round ROI.
    disc = _disc(64, 64, 31.0, 30.0, 20.0)[None]
    assert float(normalised_radius(disc)[0, 31, 30 + 20]) == pytest.approx(1.0, abs=0.03)


def test_channels_shapes_order_and_refusals() -> None:
    roi = _disc(16, 16, 7.0, 8.0, 5.0).expand(3, 16, 16)
    image = torch.randn(3, 2, 16, 16)
    assert [n_context_channels(c) for c in CONTEXTS] == [0, 1, 2]
    assert context_channels(roi, "none").shape == (3, 0, 16, 16)
    both = context_channels(roi, "distance+radius")
    assert both.shape == (3, 2, 16, 16)
    assert torch.equal(both[:, 0], normalised_distance(roi))
    assert torch.equal(both[:, 1], normalised_radius(roi))
    assert torch.equal(context_channels(roi, "distance")[:, 0], both[:, 0])
    assert network_input(image, roi, "none") is image
    joined = network_input(image, roi, "distance")
    assert joined.shape == (3, 3, 16, 16) and torch.equal(joined[:, :2], image)
    with pytest.raises(InputError, match="context must be one of none, distance"):
        context_channels(roi, "radius")
    with pytest.raises(InputError, match=r"roi must be \(B, H, W\)"):
        border_distance(roi[0])


def test_channels_commute_with_the_tta_symmetries() -> None:
    """Context of a turned / mirrored ROI == turned / mirrored context (square crop)."""
    rng = np.random.default_rng(3)
    roi = torch.as_tensor(rng.random((2, 20, 20)) < 0.7) & _disc(20, 20, 8.0, 11.0, 7.0)
    channels = context_channels(roi, "distance+radius")
    for transform in symmetries(20, 20):
        moved = context_channels(apply_transform(roi, transform), "distance+radius")
        assert torch.allclose(moved, apply_transform(channels, transform), atol=1e-5)
