"""Post-processing of ROI masks on hand-made masks: largest component, holes, empty slices."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from deepgmm.roi.postprocess import (
    clear_small_slices,
    fill_holes_per_slice,
    in_plane_disc,
    largest_component_per_slice,
    open_per_slice,
    probabilities_to_mask,
)


def _square(mask: np.ndarray, z: int, x0: int, y0: int, side: int) -> None:
    mask[x0:x0 + side, y0:y0 + side, z] = True


def test_largest_component_kept_in_each_slice_on_its_own():
    mask = np.zeros((20, 20, 3), dtype=bool)
    _square(mask, 0, 1, 1, 5)     # 25 voxels: the largest of slice 0
    _square(mask, 0, 12, 12, 3)   # 9 voxels: dropped
    _square(mask, 1, 12, 12, 3)   # 9 voxels: alone in slice 1, kept though smaller than 25
    _square(mask, 1, 0, 18, 2)    # 4 voxels: dropped
    out = largest_component_per_slice(mask)
    expected = np.zeros_like(mask)
    _square(expected, 0, 1, 1, 5)
    _square(expected, 1, 12, 12, 3)
    np.testing.assert_array_equal(out, expected)


def test_diagonal_neighbours_are_one_component():
    mask = np.zeros((6, 6, 1), dtype=bool)
    mask[0, 0, 0] = mask[1, 1, 0] = mask[2, 2, 0] = True  # 8-connected chain of 3
    mask[5, 0, 0] = mask[5, 1, 0] = True                  # 2 voxels
    out = largest_component_per_slice(mask)
    assert out[:, :, 0].sum() == 3 and out[1, 1, 0] and not out[5, 0, 0]


def test_slices_do_not_connect_through_z():
    # A large blob in slice 0 touching a small one in slice 1 at the same place: in 3-D
    # they would be one component; per slice the small blob is its slice's largest.
    mask = np.zeros((10, 10, 2), dtype=bool)
    _square(mask, 0, 0, 0, 6)
    _square(mask, 1, 0, 0, 2)
    _square(mask, 1, 7, 7, 3)
    out = largest_component_per_slice(mask)
    assert out[:, :, 0].sum() == 36
    assert out[:, :, 1].sum() == 9 and out[8, 8, 1] and not out[0, 0, 1]


def test_holes_filled_per_slice_but_not_open_bays():
    mask = np.zeros((9, 9, 2), dtype=bool)
    mask[1:8, 1:8, 0] = True
    mask[3:6, 3:6, 0] = False   # enclosed hole: filled
    mask[1:8, 1:8, 1] = True
    mask[3:6, 0:6, 1] = False   # a bay open to the border (column 0 is background): kept open
    out = fill_holes_per_slice(mask)
    assert out[:, :, 0].sum() == 49
    np.testing.assert_array_equal(out[:, :, 1], mask[:, :, 1])


def test_hole_in_first_and_last_slice_filled():
    ring = np.zeros((7, 7), dtype=bool)
    ring[1:6, 1:6] = True
    ring[3, 3] = False
    mask = np.stack([ring, ring, ring], axis=-1)
    out = fill_holes_per_slice(mask)
    assert out[3, 3].all()


def test_small_and_empty_slices_left_empty():
    mask = np.zeros((30, 30, 3), dtype=bool)
    _square(mask, 0, 0, 0, 20)   # 400 voxels x 0.5 x 0.5 = 100 mm^2: kept (>= 100)
    _square(mask, 1, 0, 0, 19)   # 361 x 0.25 = 90.25 mm^2: cleared
    out = clear_small_slices(mask, (0.5, 0.5, 10.0), min_area_mm2=100.0)
    assert out[:, :, 0].sum() == 400 and not out[:, :, 1:].any()


def test_probabilities_to_mask_all_steps():
    prob = np.zeros((40, 40, 4), dtype=np.float32)
    prob[5:25, 5:25, 0] = 0.9       # LV with a hole and a false positive
    prob[12:15, 12:15, 0] = 0.2
    prob[32:36, 32:36, 0] = 0.8
    prob[10:14, 10:14, 1] = 0.7     # 16 voxels = 16 mm^2 < 100 mm^2: no LV in slice 1
    prob[:, :, 2] = 0.5             # exactly at the threshold: not above it
    out = probabilities_to_mask(prob, (1.0, 1.0, 8.0), threshold=0.5, min_area_mm2=100.0)
    expected = np.zeros((40, 40, 4), dtype=bool)
    expected[5:25, 5:25, 0] = True
    np.testing.assert_array_equal(out, expected)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_properties_against_scipy_per_slice(seed):
    rng = np.random.default_rng(seed)
    mask = ndimage.binary_opening(rng.random((16, 16, 3)) > 0.55,
                                  structure=np.ones((2, 2, 1), dtype=bool))
    out = fill_holes_per_slice(largest_component_per_slice(mask))
    for z in range(mask.shape[2]):
        labels, n = ndimage.label(mask[:, :, z], structure=np.ones((3, 3)))
        if n == 0:
            assert not out[:, :, z].any()
            continue
        sizes = np.bincount(labels.ravel())[1:]
        kept = labels == int(np.argmax(sizes)) + 1
        np.testing.assert_array_equal(out[:, :, z], ndimage.binary_fill_holes(kept))


def test_bad_shape_refused():
    from deepgmm.errors import InputError

    with pytest.raises(InputError, match=r"\(X, Y, Z\)"):
        largest_component_per_slice(np.zeros((4, 4), dtype=bool))


def _disc(shape: tuple[int, int], centre: tuple[int, int], radius: float) -> np.ndarray:
    x, y = np.ogrid[:shape[0], :shape[1]]
    return (x - centre[0]) ** 2 + (y - centre[1]) ** 2 <= radius ** 2


def test_disc_structure_follows_the_spacing():
    disc = in_plane_disc(2.0, (1.0, 0.5))
    assert disc.shape == (5, 9, 1)  # 2 mm = 2 voxels along x, 4 along y
    assert disc[2, 4, 0] and disc[0, 4, 0] and disc[2, 0, 0] and not disc[0, 0, 0]
    assert disc.sum() == 9 + 2 * 7 + 2 * 1  # rows x = 0, +-1, +-2 (x mm, y voxels of 0.5 mm)


def test_opening_cuts_a_thin_protrusion_and_keeps_the_disc():
    lv = _disc((80, 80), (40, 30), 20)  # 20 mm radius at 1 mm
    mask = np.zeros((80, 80, 2), dtype=bool)
    mask[:, :, 0] = lv
    mask[38:42, 30:78, 0] = True  # a 4 mm wide arm out to the image edge
    mask[:, :, 1] = _disc((80, 80), (40, 40), 6)  # a small apical section: 6 mm radius
    out = open_per_slice(mask, (1.0, 1.0, 10.0), 10.0)
    # the arm beyond the disc is gone, the disc itself kept (a digital disc is not exactly
    # open under a smaller digital disc: 13 of its 1257 boundary voxels go)
    assert not out[38:42, 55:78, 0].any()
    assert (out[:, :, 0] & lv).sum() >= 0.98 * lv.sum()
    assert not (out[:, :, 0] & ~mask[:, :, 0]).any()  # an opening never adds
    # the 10 mm disc does not fit in the small section: it keeps its mask
    np.testing.assert_array_equal(out[:, :, 1], mask[:, :, 1])
    np.testing.assert_array_equal(open_per_slice(mask, (1.0, 1.0, 10.0), 0.0), mask)


def test_probabilities_to_mask_opens_by_default():
    prob = np.zeros((80, 80, 1))
    prob[_disc((80, 80), (40, 30), 20), 0] = 0.9
    prob[38:42, 30:78, 0] = 0.9
    default = probabilities_to_mask(prob, (1.0, 1.0, 8.0))
    unopened = probabilities_to_mask(prob, (1.0, 1.0, 8.0), opening_mm=0.0)
    assert unopened[38:42, 55:78, 0].all() and not default[38:42, 55:78, 0].any()
