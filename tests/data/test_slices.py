"""Slice selection, ROI crop / un-crop and per-slice normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from deepgmm.data.slices import crop, crop_center, make_batch, select_slices, uncrop
from deepgmm.errors import InputError
from deepgmm.types import CaseVolume


def _volume(x=20, y=24, z=3, case_id="7", seed=0, labels=True) -> CaseVolume:
    """Slice 0: all classes; slice 1: no scar; slice 2: empty ROI."""
    lab = np.zeros((x, y, z), dtype=np.int64)
    lab[6:12, 5:11, 0] = 2
    lab[8:10, 7:9, 0] = 1
    lab[6, 5, 0] = 3
    lab[6, 6, 0] = 4
    lab[4:10, 4:8, 1] = 1
    lab[10:12, 4:8, 1] = 2
    rng = np.random.default_rng(seed)
    image = rng.normal(100.0, 10.0, size=(2, x, y, z)).astype(np.float32)
    return CaseVolume(case_id=case_id, sequences=("A", "B"), image=image, roi=lab > 0,
                      labels=lab if labels else None, affine=np.eye(4),
                      zooms=(0.8, 0.9, 5.0))


def test_select_slices_by_hand():
    vol = _volume()
    assert select_slices(vol, "all-classes") == [0]
    assert select_slices(vol, "roi") == [0, 1]
    with pytest.raises(InputError, match="must be one of all-classes, roi"):
        select_slices(vol, "every")
    with pytest.raises(InputError, match="case 7 has no ground truth.*'roi'"):
        select_slices(_volume(labels=False), "all-classes")


def test_crop_center_is_middle_roi_slice_centre_of_mass():
    vol = _volume()
    # ROI slices [0, 1]: the middle one is index 1, ROI x 4..11, y 4..7 -> (7.5, 5.5) -> (8, 6)
    assert crop_center(vol) == (8, 6)


@settings(max_examples=60, deadline=None)
@given(ox=st.integers(-12, 20), oy=st.integers(-12, 20), h=st.integers(1, 30),
       w=st.integers(1, 30))
def test_crop_uncrop_round_trip(ox, oy, h, w):
    full = np.arange(2 * 9 * 11, dtype=np.int64).reshape(2, 9, 11) + 1
    c = crop(full, (ox, oy), (h, w), fill=0)
    assert c.shape == (2, h, w)
    back = uncrop(c, (ox, oy), (9, 11), fill=0)
    inside = np.zeros((9, 11), dtype=bool)
    inside[max(ox, 0):max(min(ox + h, 9), 0), max(oy, 0):max(min(oy + w, 11), 0)] = True
    np.testing.assert_array_equal(back, np.where(inside, full, 0))
    # the other way: a crop-sized map survives uncrop -> crop on the part inside the image
    np.testing.assert_array_equal(crop(back, (ox, oy), (h, w)), c)
    assert (c > 0).sum() == 2 * inside.sum()


def test_uncrop_fill_and_leading_dims():
    maps = np.ones((3, 2, 2), dtype=np.float32)
    out = uncrop(maps, (-1, 3), (4, 4), fill=-1)
    assert out.shape == (3, 4, 4)
    assert out[:, 0, 3].tolist() == [1, 1, 1] and (out == 1).sum() == 3
    assert (out == -1).sum() == 3 * 15


def test_make_batch_fields_and_exact_uncrop():
    vols = [_volume(case_id="1"), _volume(case_id="2", seed=1)]
    batch = make_batch(vols, selection="roi", crop_size=(8, 10), normalisation="crop")
    assert len(batch) == 4 and batch.image.shape == (4, 2, 8, 10)
    assert batch.image.dtype == torch.float32 and batch.roi.dtype == torch.bool
    assert batch.labels.dtype == torch.int64
    assert batch.case_ids == ["1", "1", "2", "2"] and batch.slice_indices == [0, 1, 0, 1]
    assert batch.sequences == ("A", "B")
    np.testing.assert_array_equal(batch.crop_origins, [[4, 1]] * 4)
    np.testing.assert_array_equal(batch.full_shapes, [[20, 24]] * 4)
    np.testing.assert_allclose(batch.spacing, [[0.8, 0.9]] * 4)
    for b in range(4):
        z = batch.slice_indices[b]
        vol = vols[int(batch.case_ids[b]) - 1]
        roi = uncrop(batch.roi[b].numpy(), batch.crop_origins[b], batch.full_shapes[b])
        np.testing.assert_array_equal(roi, vol.roi[:, :, z])
        lab = uncrop(batch.labels[b].numpy(), batch.crop_origins[b], batch.full_shapes[b])
        np.testing.assert_array_equal(lab, vol.labels[:, :, z])
        # the crop is the image, z-scored: a linear map of the raw window
        raw = vol.image[:, 4:12, 1:11, z]
        for m in range(2):
            got = batch.image[b, m].numpy()
            expected = (raw[m] - raw[m].mean()) / raw[m].std()
            np.testing.assert_allclose(got, expected, atol=1e-5)


def test_make_batch_pads_small_images_and_normalises_inside_only():
    vol = _volume()
    batch = make_batch([vol], selection="all-classes", crop_size=(32, 30))
    assert batch.image.shape == (1, 2, 32, 30)
    ox, oy = batch.crop_origins[0]
    assert (ox, oy) == (8 - 16, 6 - 15)
    inside = np.zeros((32, 30), dtype=bool)
    inside[-ox:-ox + 20, -oy:-oy + 24] = True
    img = batch.image[0].numpy()
    assert np.all(img[:, ~inside] == 0)
    np.testing.assert_allclose(img[:, inside].mean(axis=1), 0, atol=1e-5)
    np.testing.assert_allclose(img[:, inside].std(axis=1), 1, atol=1e-5)
    back = uncrop(batch.roi[0].numpy(), batch.crop_origins[0], batch.full_shapes[0])
    np.testing.assert_array_equal(back, vol.roi[:, :, 0])


def test_make_batch_roi_normalisation(phantom_volumes):
    batch = make_batch(phantom_volumes, crop_size=(64, 64), normalisation="roi")
    assert batch.normalisation == "roi" and batch.crop_size == (64, 64)  # recorded
    img = batch.image.numpy().transpose(1, 0, 2, 3)  # (M, B, H, W)
    roi = batch.roi.numpy()
    for b in range(len(batch)):
        vals = img[:, b][:, roi[b]]
        np.testing.assert_allclose(vals.mean(axis=1), 0, atol=1e-4)
        np.testing.assert_allclose(vals.std(axis=1), 1, atol=1e-4)


def test_phantom_batch_fixture(phantom_batch):
    assert phantom_batch.image.shape == (12, 3, 64, 64)
    assert phantom_batch.labels is not None
    for b in range(len(phantom_batch)):
        present = set(torch.unique(phantom_batch.labels[b]).tolist())
        assert present == {0, 1, 2, 3, 4}
    np.testing.assert_allclose(phantom_batch.image.mean(dim=(2, 3)), 0, atol=1e-4)
    np.testing.assert_allclose(phantom_batch.image.std(dim=(2, 3), correction=0), 1, atol=1e-4)


def test_make_batch_int_crop_is_square():
    batch = make_batch([_volume()], crop_size=16)
    assert batch.image.shape == (1, 2, 16, 16)


def test_make_batch_without_labels():
    batch = make_batch([_volume(labels=False)], selection="roi", crop_size=(16, 16))
    assert batch.labels is None
    with pytest.raises(InputError, match="case 7 has no ground truth, but labels are needed"):
        make_batch([_volume(labels=False)], selection="roi", require_labels=True)


def test_make_batch_constant_image():
    vol = _volume()
    vol.image[1, :, :, 0] = 5.0
    with pytest.raises(InputError, match="case 7, slice 0, sequence B.*constant"):
        make_batch([vol], crop_size=(16, 16))


def test_make_batch_empty_roi_in_selected_slice():
    with pytest.raises(InputError, match="case 7, slice 2: the region of interest is empty"):
        make_batch([_volume()], selection={"7": [0, 2]}, crop_size=(16, 16))


def test_make_batch_explicit_selection():
    batch = make_batch([_volume()], selection={"7": [1]}, crop_size=(16, 16))
    assert batch.slice_indices == [1]
    with pytest.raises(InputError, match=r"slice index\(es\) \[5\] out of range"):
        make_batch([_volume()], selection={"7": [5]}, crop_size=(16, 16))


def test_make_batch_empty_batch():
    vol = _volume()
    vol.labels[vol.labels == 4] = 2
    with pytest.raises(InputError, match=r"no slice selected \(all-classes\).*empty"):
        make_batch([vol], crop_size=(16, 16))
    with pytest.raises(InputError, match="no cases given"):
        make_batch([])


@pytest.mark.parametrize("size", [(0, 16), (-4, 16), (16.5, 16), ("a", 16), (16,), 0, True])
def test_make_batch_invalid_crop_size(size):
    with pytest.raises(InputError, match="crop size must be two positive integers"):
        make_batch([_volume()], crop_size=size)


def test_make_batch_crop_far_larger_than_image():
    with pytest.raises(InputError, match=r"crop size \(41, 16\) is more than 2 times.*\(20, 24\)"):
        make_batch([_volume()], crop_size=(41, 16))


def test_make_batch_roi_outside_crop():
    with pytest.raises(InputError, match=r"case 7, slice 0: \d+ ROI voxel\(s\) lie outside the "
                                         r"4 x 4 crop"):
        make_batch([_volume()], crop_size=(4, 4))


def test_make_batch_recentres_on_the_bounding_box_when_the_roi_would_be_cut():
    # middle ROI slice (index 1 of 0..2) centred at x 20; slice 2's ROI runs from x 6 to 27
    roi = np.zeros((40, 24, 3), dtype=bool)
    roi[16:25, 8:16, 0] = True
    roi[16:25, 8:16, 1] = True
    roi[6:28, 8:16, 2] = True
    image = np.random.default_rng(0).normal(size=(2, 40, 24, 3)).astype(np.float32)
    vol = CaseVolume(case_id="9", sequences=("A", "B"), image=image, roi=roi, labels=None,
                     affine=np.eye(4), zooms=(1.0, 1.0, 5.0))
    assert crop_center(vol) == (20, 12)
    batch = make_batch([vol], selection="roi", crop_size=(22, 16))
    # the centre of mass crop (x 9..30) cuts slice 2's x 6..8; its bounding box's (6..27) fits
    assert batch.crop_origins[0].tolist() == [6, 4]
    assert int(batch.roi.sum()) == int(roi.sum())
    # the same crop for every slice of the case
    np.testing.assert_array_equal(batch.roi[2].numpy(), roi[6:28, 4:20, 2])
    np.testing.assert_array_equal(batch.roi[0].numpy(), roi[6:28, 4:20, 0])
    # where not even the bounding box fits (21 rows: x 7..27), the error stays
    with pytest.raises(InputError, match="case 9, slice 2: 8 ROI voxel"):
        make_batch([vol], selection="roi", crop_size=(21, 16))
    # a ROI that fits around its centre of mass keeps that crop
    assert make_batch([vol], selection={"9": [0, 1]},
                      crop_size=(22, 16)).crop_origins[0].tolist() == [9, 4]


def test_make_batch_bad_options_and_mismatched_sequences():
    with pytest.raises(InputError, match="normalisation must be one of crop, roi"):
        make_batch([_volume()], normalisation="global")
    other = _volume(case_id="8")
    other.sequences = ("A", "C")
    with pytest.raises(InputError, match=r"case 8 has sequences \('A', 'C'\)"):
        make_batch([_volume(), other], crop_size=(16, 16))
