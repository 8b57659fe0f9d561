"""From a case's slices to the ROI network's grid and back.

Every slice is resampled in-plane to ``spacing_mm`` (the same for all scanners: MyoPS grids
of 0.73-0.76 mm and any other grid alike; slices along Z are kept as they are), cut to a
``crop`` x ``crop`` window centred on the slice (zero padding where the window leaves the
image) and normalised per slice and sequence: intensities clipped to their 1st-99th
percentile over the window's pixels inside the image, then z-scored there. Network outputs
go back the same way: the window is put into the resampled slice (zero outside) and
resampled onto the input grid.

Resampling is :func:`torch.nn.functional.interpolate` (bilinear, anti-aliased when
shrinking) with the output size ``round(n * zoom / spacing_mm)`` per axis: the in-plane zoom
is all MONAI's ``Spacing`` would do here (it resamples the whole 3-D volume through its
affine), and ``interpolate`` works on all slices and sequences at once and is inverted
exactly by the same call with the sizes swapped.

Shapes: an image is ``(M, X, Y, Z)``; on the network grid a case is ``(Z, M, C, C)`` with
``C = crop``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from deepgmm.data.slices import crop as crop_window
from deepgmm.data.slices import uncrop
from deepgmm.errors import InputError

CLIP_PERCENTILES: tuple[float, float] = (1.0, 99.0)
"""Intensities are clipped to these percentiles (per slice and sequence) before z-scoring."""

_MIN_STD = 1e-6


@dataclass(frozen=True)
class SliceGrid:
    """Where one case's slices lie on the network grid.

    Attributes:
        in_shape: ``(X, Y)`` in-plane size of the input grid, voxels.
        resampled_shape: ``(X', Y')`` in-plane size after resampling to the network spacing.
        crop_origin: ``(x, y)`` corner of the window in the resampled slice (may be negative).
        crop: side of the square window, pixels.
    """

    in_shape: tuple[int, int]
    resampled_shape: tuple[int, int]
    crop_origin: tuple[int, int]
    crop: int


def slice_grid(in_shape: Sequence[int], zooms: Sequence[float], *, spacing_mm: float,
               crop: int) -> SliceGrid:
    """The network grid of a case with in-plane size ``in_shape`` and spacing ``zooms``.

    Args:
        in_shape: ``(X, Y)`` (further entries, e.g. Z, are ignored).
        zooms: voxel spacing in mm, ``(dx, dy)`` first.
        spacing_mm: the network's in-plane pixel size.
        crop: the network window's side in pixels.

    Raises:
        InputError: a non-positive spacing or size.
    """
    shape = tuple(int(s) for s in in_shape[:2])
    dx, dy = (float(z) for z in zooms[:2])
    if min(shape) <= 0 or min(dx, dy) <= 0 or spacing_mm <= 0 or crop <= 0:
        raise InputError(f"cannot resample a slice of {shape} voxels of {(dx, dy)} mm to "
                         f"{spacing_mm} mm: sizes and spacings must be positive")
    resampled = (max(1, round(shape[0] * dx / spacing_mm)),
                 max(1, round(shape[1] * dy / spacing_mm)))
    origin = ((resampled[0] - crop) // 2, (resampled[1] - crop) // 2)
    return SliceGrid(in_shape=shape, resampled_shape=resampled, crop_origin=origin, crop=crop)


def _resample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(N, C, H, W)`` -> ``(N, C, *size)``, bilinear, anti-aliased when shrinking."""
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)


def _window_bounds(grid: SliceGrid) -> tuple[slice, slice]:
    """The part of the resampled slice that the window covers (inside the image)."""
    (ox, oy), c = grid.crop_origin, grid.crop
    x0, y0 = max(ox, 0), max(oy, 0)
    x1 = min(ox + c, grid.resampled_shape[0])
    y1 = min(oy + c, grid.resampled_shape[1])
    return slice(x0, x1), slice(y0, y1)


def normalise_window(image: torch.Tensor) -> torch.Tensor:
    """Clip ``(Z, M, H, W)`` per slice and sequence to its percentiles, then z-score.

    A constant slice becomes zeros.
    """
    z, m, h, w = image.shape
    flat = image.reshape(z * m, h * w)
    q = torch.tensor([p / 100.0 for p in CLIP_PERCENTILES], dtype=flat.dtype)
    low, high = torch.quantile(flat, q, dim=1, keepdim=True)  # (Z*M, 1) each
    clipped = torch.minimum(torch.maximum(flat, low), high)
    mean = clipped.mean(dim=1, keepdim=True)
    std = clipped.std(dim=1, unbiased=False, keepdim=True)
    out = torch.where(std > _MIN_STD * mean.abs().clamp_min(1.0),
                      (clipped - mean) / std.clamp_min(_MIN_STD), torch.zeros_like(clipped))
    return out.reshape(z, m, h, w)


def image_to_network(image: np.ndarray, grid: SliceGrid) -> torch.Tensor:
    """A case's sequences ``(M, X, Y, Z)`` -> normalised windows ``(Z, M, C, C)`` float32."""
    if image.ndim != 4 or tuple(image.shape[1:3]) != grid.in_shape:
        raise InputError(f"image must be (M, X, Y, Z) with (X, Y) = {grid.in_shape}, got "
                         f"shape {tuple(image.shape)}")
    slices = torch.from_numpy(np.ascontiguousarray(image.transpose(3, 0, 1, 2),
                                                   dtype=np.float32))
    resampled = _resample(slices, grid.resampled_shape)  # (Z, M, X', Y')
    sx, sy = _window_bounds(grid)
    normalised = resampled.clone()
    normalised[..., sx, sy] = normalise_window(resampled[..., sx, sy].contiguous())
    return torch.from_numpy(crop_window(normalised.numpy(), grid.crop_origin,
                                        (grid.crop, grid.crop), fill=0.0))


def mask_to_network(mask: np.ndarray, grid: SliceGrid) -> torch.Tensor:
    """A case's mask ``(X, Y, Z)`` -> ``(Z, C, C)`` bool windows (area-weighted, > 0.5)."""
    if mask.ndim != 3 or tuple(mask.shape[:2]) != grid.in_shape:
        raise InputError(f"mask must be (X, Y, Z) with (X, Y) = {grid.in_shape}, got shape "
                         f"{tuple(mask.shape)}")
    slices = torch.from_numpy(np.ascontiguousarray(mask.transpose(2, 0, 1), dtype=np.float32))
    resampled = _resample(slices[:, None], grid.resampled_shape)[:, 0]
    return torch.from_numpy(crop_window(resampled.numpy() > 0.5, grid.crop_origin,
                                        (grid.crop, grid.crop), fill=False))


def network_to_input(maps: torch.Tensor, grid: SliceGrid) -> np.ndarray:
    """Windows ``(Z, C, C)`` (e.g. LV probabilities) -> ``(X, Y, Z)`` float32 on the input grid.

    Outside the window the map is 0.
    """
    if maps.ndim != 3 or tuple(maps.shape[1:]) != (grid.crop, grid.crop):
        raise InputError(f"maps must be (Z, {grid.crop}, {grid.crop}), got shape "
                         f"{tuple(maps.shape)}")
    full = uncrop(maps.detach().cpu().float().numpy(), grid.crop_origin, grid.resampled_shape)
    back = _resample(torch.from_numpy(full)[:, None], grid.in_shape)[:, 0]
    return np.ascontiguousarray(back.numpy().transpose(1, 2, 0), dtype=np.float32)
