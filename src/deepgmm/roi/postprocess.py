"""From LV probabilities to an ROI mask: what a user expects of a left-ventricle outline.

Steps, each slice on its own (slices are 10-23 mm apart and often from separate breath-holds,
so the LV of neighbouring slices need not overlap and 3-D connectivity would cut slices
off that belong to it):

1. threshold the probability (``> threshold``);
2. keep the largest 8-connected component of the slice;
3. fill its holes (background not connected to the slice's border);
4. open it with a disc of ``opening_mm`` radius and keep the largest component again: a
   filled LV cross-section is a compact disc-like region at least twice that wide away
   from the apex, so what an opening removes are thin protrusions (into the outflow tract,
   the atrium or the right ventricle) that the network joined to it. A slice that the
   opening would empty keeps its mask of step 3 (a small apical section is not lost);
5. leave the slice empty where that component is smaller than ``min_area_mm2``: the LV is
   absent there (beyond the apex, above the base) and what remains is a false positive.

MONAI's ``KeepLargestConnectedComponent`` needs scikit-image (not a dependency of this
package) and, like ``FillHoles``, treats a stack of slices either as one 3-D image or as
one-hot channels where channel 0 counts as background; :func:`scipy.ndimage.label` and
:func:`scipy.ndimage.binary_fill_holes` with an in-plane structuring element do every
slice of a volume in one call.

Shapes: ``(X, Y, Z)``, slices along Z.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from deepgmm.errors import InputError

DEFAULT_THRESHOLD = 0.5
DEFAULT_MIN_AREA_MM2 = 100.0
"""Smallest LV cross-section kept (a disc of about 11 mm across); smaller is "no LV"."""
DEFAULT_OPENING_MM = 10.0
"""Radius of the disc the mask of each slice is opened with (0: no opening)."""


def _in_plane_structure(connectivity: int) -> np.ndarray:
    """``(3, 3, 3)`` structuring element linking pixels within a slice only."""
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[:, :, 1] = ndimage.generate_binary_structure(2, connectivity)
    return structure


def _check_mask(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise InputError(f"mask must be (X, Y, Z), got shape {mask.shape}")
    return mask.astype(bool, copy=False)


def largest_component_per_slice(mask: np.ndarray) -> np.ndarray:
    """Keep, in every slice of ``(X, Y, Z)`` ``mask``, only its largest 8-connected component.

    Ties are broken by the lower label (first in scan order). Empty slices stay empty.
    """
    mask = _check_mask(mask)
    labels, n = ndimage.label(mask, structure=_in_plane_structure(2))
    if n == 0:
        return np.zeros_like(mask)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    slice_of = np.zeros(n + 1, dtype=np.int64)
    flat = labels[mask]
    slice_of[flat] = np.nonzero(mask)[2]  # every component lies in one slice
    ids = np.arange(1, n + 1)
    # Sort by (slice, size, -id); the last entry of each slice is its largest component.
    order = np.lexsort((-ids, sizes[1:], slice_of[1:]))
    z_sorted = slice_of[1:][order]
    last = np.r_[z_sorted[1:] != z_sorted[:-1], True]
    keep = np.zeros(n + 1, dtype=bool)
    keep[ids[order][last]] = True
    return keep[labels]


def fill_holes_per_slice(mask: np.ndarray) -> np.ndarray:
    """Fill, in every slice of ``(X, Y, Z)``, background not 4-connected to the slice border."""
    mask = _check_mask(mask)
    return ndimage.binary_fill_holes(mask, structure=_in_plane_structure(1))


def in_plane_disc(radius_mm: float, zooms: Sequence[float]) -> np.ndarray:
    """``(2a + 1, 2b + 1, 1)`` bool disc of ``radius_mm`` on a grid of spacing ``zooms``
    (dx, dy) mm: a structuring element acting within each slice."""
    half = [int(np.floor(radius_mm / float(z))) for z in zooms[:2]]
    x, y = np.ogrid[-half[0]:half[0] + 1, -half[1]:half[1] + 1]
    disc = (x * float(zooms[0])) ** 2 + (y * float(zooms[1])) ** 2 <= radius_mm ** 2
    return disc[:, :, None]


def open_per_slice(mask: np.ndarray, zooms: Sequence[float], radius_mm: float) -> np.ndarray:
    """Open every slice of ``(X, Y, Z)`` ``mask`` with a disc of ``radius_mm`` and keep its
    largest component; a slice the opening empties keeps ``mask`` (module docstring, step 4).
    ``radius_mm <= 0`` returns ``mask``."""
    mask = _check_mask(mask)
    if radius_mm <= 0:
        return mask.copy()
    opened = largest_component_per_slice(
        ndimage.binary_opening(mask, structure=in_plane_disc(radius_mm, zooms)))
    emptied = mask.any(axis=(0, 1)) & ~opened.any(axis=(0, 1))  # (Z,)
    return np.where(emptied[None, None, :], mask, opened)


def clear_small_slices(mask: np.ndarray, zooms: Sequence[float], min_area_mm2: float,
                       ) -> np.ndarray:
    """Empty every slice of ``(X, Y, Z)`` ``mask`` whose area is below ``min_area_mm2``."""
    mask = _check_mask(mask)
    area = mask.sum(axis=(0, 1)) * float(zooms[0]) * float(zooms[1])  # (Z,) mm^2
    return mask & (area >= float(min_area_mm2))[None, None, :]


def probabilities_to_mask(probabilities: np.ndarray, zooms: Sequence[float], *,
                          threshold: float = DEFAULT_THRESHOLD,
                          min_area_mm2: float = DEFAULT_MIN_AREA_MM2,
                          opening_mm: float = DEFAULT_OPENING_MM) -> np.ndarray:
    """The ROI mask of a case: threshold, largest component, holes filled, opened, small
    slices empty.

    Args:
        probabilities: ``(X, Y, Z)`` LV probability on the input grid.
        zooms: voxel spacing in mm, ``(dx, dy, ...)``.
        threshold: probability above which a voxel is LV.
        min_area_mm2: a slice whose largest component is smaller is left empty.
        opening_mm: radius of the opening disc (0: none).

    Returns:
        ``(X, Y, Z)`` bool mask.
    """
    probabilities = np.asarray(probabilities)
    if probabilities.ndim != 3:
        raise InputError(f"probabilities must be (X, Y, Z), got shape {probabilities.shape}")
    mask = largest_component_per_slice(probabilities > threshold)
    mask = fill_holes_per_slice(mask)
    mask = open_per_slice(mask, zooms, opening_mm)
    return clear_small_slices(mask, zooms, min_area_mm2)
