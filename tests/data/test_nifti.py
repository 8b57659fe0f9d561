"""NIfTI loading, same-space checks and atomic saving."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from deepgmm.data.nifti import check_same_space, load_nifti, save_nifti
from deepgmm.errors import InputError


def test_load_returns_float32_volume(write_nii):
    data = np.arange(4 * 5 * 3, dtype=np.int16).reshape(4, 5, 3)
    aff = np.diag([0.5, 0.7, 8.0, 1.0])
    vol = load_nifti(write_nii("a.nii.gz", data, aff))
    assert vol.data.dtype == np.float32
    assert vol.shape == (4, 5, 3)
    np.testing.assert_array_equal(vol.data, data.astype(np.float32))
    np.testing.assert_allclose(vol.affine, aff)
    assert vol.zooms == pytest.approx((0.5, 0.7, 8.0))


def test_load_2d_as_one_slice_and_drops_trailing_singletons(write_nii):
    assert load_nifti(write_nii("a.nii", np.ones((6, 7)))).shape == (6, 7, 1)
    assert load_nifti(write_nii("b.nii.gz", np.ones((6, 7, 2, 1)))).shape == (6, 7, 2)


def test_load_refuses_4d(write_nii):
    with pytest.raises(InputError, match=r"b\.nii\.gz.*\(4, 4, 3, 2\).*3-D"):
        load_nifti(write_nii("b.nii.gz", np.ones((4, 4, 3, 2))))


def test_load_refuses_non_nifti_suffix(tmp_path: Path):
    path = tmp_path / "image.png"
    path.write_bytes(b"\x89PNG")
    with pytest.raises(InputError, match=r"image\.png.*not a NIfTI file"):
        load_nifti(path)


def test_load_refuses_garbage_with_nifti_name(tmp_path: Path):
    path = tmp_path / "fake.nii.gz"
    with gzip.open(path, "wb") as f:
        f.write(b"this is not a nifti header" * 20)
    with pytest.raises(InputError, match=r"fake\.nii\.gz.*could not be read"):
        load_nifti(path)


def test_load_refuses_truncated_gzip(write_nii):
    path = write_nii("t.nii.gz", np.random.default_rng(0).normal(size=(30, 30, 4)))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputError, match=r"t\.nii\.gz.*could not be read"):
        load_nifti(path)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_load_refuses_non_finite(write_nii, bad):
    data = np.ones((3, 3, 2), dtype=np.float32)
    data[1, 2, 1] = bad
    with pytest.raises(InputError, match=r"n\.nii\.gz.*1 NaN or infinite"):
        load_nifti(write_nii("n.nii.gz", data))


def test_load_missing_file(tmp_path: Path):
    with pytest.raises(InputError, match=r"missing\.nii\.gz.*does not exist"):
        load_nifti(tmp_path / "missing.nii.gz", what="T2 image")


def test_same_space_passes_and_names_both_files_on_shape(write_nii):
    a = load_nifti(write_nii("a.nii.gz", np.ones((4, 4, 2))))
    b = load_nifti(write_nii("b.nii.gz", np.ones((4, 4, 2))))
    check_same_space([a, b])
    c = load_nifti(write_nii("c.nii.gz", np.ones((4, 5, 2))))
    with pytest.raises(InputError, match=r"c\.nii\.gz.*\(4, 5, 2\).*a\.nii\.gz.*\(4, 4, 2\)"):
        check_same_space([a, b, c])


@pytest.mark.parametrize(("affine", "how"), [
    (np.diag([1.0, 2.0, 1.0, 1.0]), "voxel spacing"),
    (np.array([[1.0, 0, 0, 5.0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]), "origin"),
    (np.array([[0.0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]), "orientation"),
])
def test_same_space_says_how_affines_differ(write_nii, affine, how):
    a = load_nifti(write_nii("a.nii.gz", np.ones((4, 4, 2))))
    b = load_nifti(write_nii("b.nii.gz", np.ones((4, 4, 2)), affine))
    with pytest.raises(InputError, match=rf"b\.nii\.gz.*a\.nii\.gz.*not in the same space.*{how}"):
        check_same_space([a, b])


def test_same_space_tolerates_rounding(write_nii):
    a = load_nifti(write_nii("a.nii.gz", np.ones((4, 4, 2))))
    aff = np.eye(4)
    aff[0, 3] = 1e-5
    b = load_nifti(write_nii("b.nii.gz", np.ones((4, 4, 2)), aff))
    check_same_space([a, b])


@pytest.mark.parametrize(("entry", "how"), [((0, 3), "origin"), ((1, 1), "voxel spacing"),
                                            ((0, 1), "orientation")])
def test_same_space_threshold_is_1e3_mm(write_nii, entry, how):
    """Just inside AFFINE_ATOL_MM (0.9e-3 mm) passes, just outside (1.1e-3 mm) fails, for
    the origin, a spacing and a direction entry: a looser or tighter tolerance fails."""
    from deepgmm.data.nifti import AFFINE_ATOL_MM

    assert AFFINE_ATOL_MM == 1e-3
    base = np.array([[1.2, 0, 0, -80.0], [0, 1.2, 0, 40.0], [0, 0, 8.0, 12.0], [0, 0, 0, 1]])
    a = load_nifti(write_nii("a.nii.gz", np.ones((4, 4, 2)), base))
    for name, offset, ok in (("in.nii.gz", 0.9e-3, True), ("out.nii.gz", 1.1e-3, False)):
        aff = base.copy()
        aff[entry] += offset
        b = load_nifti(write_nii(name, np.ones((4, 4, 2)), aff))
        # the stored (float32) affine keeps the offset to well under the 1e-4 mm margin
        assert abs(abs(b.affine[entry] - a.affine[entry]) - offset) < 1e-5
        if ok:
            check_same_space([a, b])
        else:
            with pytest.raises(InputError, match=rf"not in the same space: {how}"):
                check_same_space([a, b])


def test_save_round_trip_keeps_geometry(write_nii, tmp_path: Path):
    rot = np.array([[0.0, -0.7, 0, 10.0], [0.7, 0, 0, -3.0], [0, 0, 8.0, 2.0], [0, 0, 0, 1]])
    src = load_nifti(write_nii("in.nii.gz", np.zeros((5, 6, 2)), rot))
    labels = np.random.default_rng(1).integers(0, 5, size=(5, 6, 2)).astype(np.int16)
    out = save_nifti(labels, src.affine, tmp_path / "out" / "labels.nii.gz", src.header)
    img = nib.load(str(out))
    np.testing.assert_array_equal(np.asarray(img.dataobj), labels)
    assert img.get_data_dtype() == np.int16
    np.testing.assert_allclose(img.affine, rot, atol=1e-6)
    np.testing.assert_allclose(img.get_qform(), rot, atol=1e-6)
    np.testing.assert_allclose(img.get_sform(), rot, atol=1e-6)
    assert int(img.header["qform_code"]) == 1 and int(img.header["sform_code"]) >= 1
    assert sorted(p.name for p in out.parent.iterdir()) == ["labels.nii.gz"]


def test_save_4d_float_and_bool(tmp_path: Path):
    probs = np.random.default_rng(0).random((4, 4, 2, 3))
    out = save_nifti(probs, np.eye(4), tmp_path / "p.nii.gz")
    img = nib.load(str(out))
    assert img.shape == (4, 4, 2, 3) and img.get_data_dtype() == np.float32
    mask = save_nifti(probs[..., 0] > 0.5, np.eye(4), tmp_path / "m.nii")
    assert nib.load(str(mask)).get_data_dtype() == np.uint8


def test_save_refuses_bad_input_and_leaves_nothing(tmp_path: Path):
    with pytest.raises(InputError, match=r"out\.png.*NIfTI"):
        save_nifti(np.zeros((2, 2, 2)), np.eye(4), tmp_path / "out.png")
    with pytest.raises(InputError, match="3-D or 4-D"):
        save_nifti(np.zeros((2, 2)), np.eye(4), tmp_path / "x.nii.gz")
    with pytest.raises(InputError, match="affine"):
        save_nifti(np.zeros((2, 2, 2)), np.eye(3), tmp_path / "x.nii.gz")
    with pytest.raises(Exception):  # noqa: B017 - nibabel refuses object arrays
        save_nifti(np.zeros((2, 2, 2), dtype=object), np.eye(4), tmp_path / "x.nii.gz")
    assert list(tmp_path.iterdir()) == []
