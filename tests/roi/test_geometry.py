"""The ROI network's grid: resampling sizes, window placement, the way back, normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepgmm.errors import InputError
from deepgmm.roi.geometry import (
    image_to_network,
    mask_to_network,
    network_to_input,
    normalise_window,
    slice_grid,
)


def test_slice_grid_hand_computed():
    # 480 x 0.73 mm = 350.4 mm -> 175 px of 2 mm; 470 x 0.75 = 352.5 mm -> 176 px.
    grid = slice_grid((480, 470, 5), (0.73, 0.75, 12.0), spacing_mm=2.0, crop=128)
    assert grid.in_shape == (480, 470)
    assert grid.resampled_shape == (175, 176)
    assert grid.crop_origin == ((175 - 128) // 2, (176 - 128) // 2)
    # A small image is padded: a negative origin.
    small = slice_grid((64, 64), (1.5, 1.5), spacing_mm=2.0, crop=128)
    assert small.resampled_shape == (48, 48) and small.crop_origin == (-40, -40)


@pytest.mark.parametrize("zooms", [(0.73, 0.73), (0.75, 1.1), (2.5, 2.5)])
def test_mask_survives_the_round_trip(zooms):
    # A disc of 30 mm radius, off centre, on grids of different spacings: to the network
    # grid and back it stays where it was (Dice > 0.95, centre within one voxel).
    shape = (int(300 / zooms[0]), int(280 / zooms[1]))
    x = (np.arange(shape[0]) + 0.5) * zooms[0]
    y = (np.arange(shape[1]) + 0.5) * zooms[1]
    disc = ((x[:, None] - 170.0) ** 2 + (y[None, :] - 120.0) ** 2) < 30.0**2
    mask = np.stack([disc, np.zeros_like(disc)], axis=-1)  # (X, Y, 2): second slice empty
    grid = slice_grid(mask.shape, zooms, spacing_mm=2.0, crop=128)
    on_net = mask_to_network(mask, grid)
    assert on_net.shape == (2, 128, 128) and on_net.dtype == torch.bool
    # area on the network grid in mm^2 matches the disc's
    assert float(on_net[0].sum()) * 4.0 == pytest.approx(np.pi * 900.0, rel=0.05)
    back = network_to_input(on_net.float(), grid) > 0.5
    assert back.shape == mask.shape and not back[..., 1].any()
    dice = 2 * (back & mask).sum() / (back.sum() + mask.sum())
    assert dice > 0.95
    centre_in = np.argwhere(mask[..., 0]).mean(axis=0)
    centre_back = np.argwhere(back[..., 0]).mean(axis=0)
    assert np.abs(centre_in - centre_back).max() <= 1.0


def test_image_to_network_normalises_inside_and_zero_pads():
    rng = np.random.default_rng(0)
    image = rng.uniform(100.0, 200.0, size=(2, 40, 40, 3)).astype(np.float32)
    grid = slice_grid(image.shape[1:], (2.0, 2.0), spacing_mm=2.0, crop=64)
    windows = image_to_network(image, grid)
    assert windows.shape == (3, 2, 64, 64) and windows.dtype == torch.float32
    ox, oy = grid.crop_origin
    assert (ox, oy) == (-12, -12)
    inside = windows[:, :, 12:52, 12:52]
    assert torch.allclose(inside.mean(dim=(2, 3)), torch.zeros(3, 2), atol=1e-4)
    assert torch.allclose(inside.std(dim=(2, 3), unbiased=False), torch.ones(3, 2), atol=1e-3)
    assert windows[:, :, :12].abs().max() == 0 and windows[:, :, :, 52:].abs().max() == 0


def test_normalise_window_clips_outliers_and_zeroes_constant_slices():
    x = torch.zeros(2, 1, 40, 40)
    x[0, 0] = torch.arange(1600, dtype=torch.float32).reshape(40, 40)
    x[0, 0, 0, 0] = 1e6   # an outlier: clipped to the 99th percentile before z-scoring
    x[1, 0] = 7.0         # constant slice
    out = normalise_window(x)
    # 1..1599 and 1e6 clipped to their 1st-99th percentile [16.99, 1584.01]: the top is
    # 1.697 sd above the mean (numpy.percentile + numpy.clip give the same)
    assert float(out[0].max()) == pytest.approx(1.697, abs=0.002)
    assert torch.equal(out[1], torch.zeros(1, 40, 40))


def test_shapes_refused():
    grid = slice_grid((40, 40), (1.0, 1.0), spacing_mm=2.0, crop=32)
    with pytest.raises(InputError, match=r"\(M, X, Y, Z\)"):
        image_to_network(np.zeros((1, 30, 40, 2), dtype=np.float32), grid)
    with pytest.raises(InputError, match=r"\(X, Y, Z\)"):
        mask_to_network(np.zeros((40, 40), dtype=bool), grid)
    with pytest.raises(InputError, match=r"\(Z, 32, 32\)"):
        network_to_input(torch.zeros(2, 16, 16), grid)
    with pytest.raises(InputError, match="positive"):
        slice_grid((40, 40), (0.0, 1.0), spacing_mm=2.0, crop=32)
