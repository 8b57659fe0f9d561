"""Loading cases: MyoPS layout, explicit files, patient selection and bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from deepgmm.data.dataset import load_case, load_dataset, load_explicit
from deepgmm.data.myops import discover_cases
from deepgmm.errors import InputError


def _gd(root: Path, case: str = "101") -> Path:
    return root / "train25_myops_gd" / f"phantom_training_{case}_gd.nii.gz"


def _img(root: Path, seq: str, case: str = "101") -> Path:
    return root / "train25" / f"phantom_training_{case}_{seq}.nii.gz"


def _rewrite(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> None:
    img = nib.load(str(path))
    nib.save(nib.Nifti1Image(data, img.affine if affine is None else affine, img.header),
             str(path))


def test_load_case_matches_files(phantom_root: Path):
    case = load_case(discover_cases(phantom_root)[0])
    codes = np.asarray(nib.load(str(_gd(phantom_root))).dataobj)
    de = np.asarray(nib.load(str(_img(phantom_root, "DE"))).dataobj)
    assert case.case_id == "101" and case.sequences == ("C0", "DE", "T2")
    assert case.image.shape == (3, 128, 128, 3) and case.image.dtype == np.float32
    np.testing.assert_array_equal(case.image[1], de)
    expected = np.select([codes == 500, codes == 200, codes == 1220, codes == 2221],
                         [1, 2, 3, 4], 0)
    np.testing.assert_array_equal(case.labels, expected)
    np.testing.assert_array_equal(case.roi, np.isin(codes, [500, 200, 1220, 2221]))
    assert (codes == 600).any() and not case.roi[codes == 600].any()
    assert case.zooms == pytest.approx((1.5, 1.5, 10.0))
    np.testing.assert_allclose(case.affine, nib.load(str(_gd(phantom_root))).affine)


def test_load_case_without_labels_is_refused(phantom_copy: Path):
    shutil.rmtree(phantom_copy / "train25_myops_gd")
    with pytest.raises(InputError, match="case 101 has no ground-truth"):
        load_case(discover_cases(phantom_copy)[0])


def test_load_case_sequence_shape_mismatch(phantom_copy: Path):
    _rewrite(_img(phantom_copy, "T2"), np.zeros((128, 120, 3), dtype=np.int16))
    with pytest.raises(InputError, match=r"_101_T2\.nii\.gz.*\(128, 120, 3\).*_101_C0\.nii\.gz"):
        load_case(discover_cases(phantom_copy)[0])


def test_load_case_affine_mismatch(phantom_copy: Path):
    aff = nib.load(str(_gd(phantom_copy))).affine.copy()
    aff[:3, 3] += 4.0
    _rewrite(_gd(phantom_copy), np.asarray(nib.load(str(_gd(phantom_copy))).dataobj), aff)
    with pytest.raises(InputError, match=r"_101_gd\.nii\.gz.*not in the same space.*origin"):
        load_case(discover_cases(phantom_copy)[0])


def test_load_case_corrupt_gzip(phantom_copy: Path):
    path = _img(phantom_copy, "DE")
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(InputError, match=r"DE image file .*_101_DE\.nii\.gz.*could not be read"):
        load_case(discover_cases(phantom_copy)[0])


def test_load_case_unknown_codes(phantom_copy: Path):
    codes = np.asarray(nib.load(str(_gd(phantom_copy))).dataobj).copy()
    codes[0, 0, 0] = 300
    _rewrite(_gd(phantom_copy), codes)
    with pytest.raises(InputError, match=r"_101_gd\.nii\.gz.* code\(s\) 300 "):
        load_case(discover_cases(phantom_copy)[0])


def test_load_case_empty_roi(phantom_copy: Path):
    codes = np.asarray(nib.load(str(_gd(phantom_copy))).dataobj)
    _rewrite(_gd(phantom_copy), np.where(codes == 600, 600, 0).astype(np.int16))
    with pytest.raises(InputError, match="region of interest is empty"):
        load_case(discover_cases(phantom_copy)[0])


def test_load_explicit_any_names_and_both_label_forms(phantom_root: Path, tmp_path: Path):
    codes_img = nib.load(str(_gd(phantom_root)))
    codes = np.asarray(codes_img.dataobj)
    roi_path = tmp_path / "roi.nii.gz"
    nib.save(nib.Nifti1Image((np.isin(codes, [500, 200, 1220, 2221]) * 7).astype(np.uint8),
                             codes_img.affine), str(roi_path))
    classes_path = tmp_path / "classes.nii.gz"
    reference = load_case(discover_cases(phantom_root)[0])
    nib.save(nib.Nifti1Image(reference.labels.astype(np.uint8), codes_img.affine),
             str(classes_path))
    images = {"lge": _img(phantom_root, "DE"), "bssfp": _img(phantom_root, "C0")}
    from_codes = load_explicit(images, roi_path, _gd(phantom_root), case_id="p1")
    from_classes = load_explicit(images, roi_path, classes_path)
    assert from_codes.sequences == ("lge", "bssfp") and from_codes.case_id == "p1"
    assert from_codes.image.shape == (2, 128, 128, 3)
    np.testing.assert_array_equal(from_codes.image[0], reference.image[1])
    np.testing.assert_array_equal(from_codes.roi, reference.roi)
    np.testing.assert_array_equal(from_codes.labels, reference.labels)
    np.testing.assert_array_equal(from_classes.labels, reference.labels)
    assert load_explicit(images, roi_path).labels is None


def test_load_explicit_bad_input(phantom_root: Path, write_nii):
    c0 = _img(phantom_root, "C0")
    aff = nib.load(str(c0)).affine
    empty = write_nii("empty.nii.gz", np.zeros((128, 128, 3), np.uint8), aff)
    with pytest.raises(InputError, match=r"ROI mask .*empty\.nii\.gz.* is empty"):
        load_explicit({"C0": c0}, empty)
    with pytest.raises(InputError, match="no image sequences"):
        load_explicit({}, empty)
    roi = write_nii("roi.nii.gz", np.ones((128, 128, 3), np.uint8), aff)
    bad_labels = write_nii("lab.nii.gz", np.full((128, 128, 3), 7, np.uint8), aff)
    with pytest.raises(InputError, match=r"lab\.nii\.gz.*code\(s\) 7 "):
        load_explicit({"C0": c0}, roi, bad_labels)
    small = write_nii("small.nii.gz", np.ones((64, 64, 3), np.uint8), aff)
    with pytest.raises(InputError, match=r"small\.nii\.gz.*\(64, 64, 3\)"):
        load_explicit({"C0": c0}, small)
    with pytest.raises(InputError, match=r"ROI mask file .*nope\.nii\.gz.* does not exist"):
        load_explicit({"C0": c0}, phantom_root / "nope.nii.gz")


def test_load_dataset_patients(phantom_root: Path):
    vols = load_dataset(phantom_root, ["103", "101"])
    assert [v.case_id for v in vols] == ["101", "103"]
    assert [v.case_id for v in load_dataset(phantom_root, exclude=["102"])] == [
        "101", "103", "104"]
    with pytest.raises(InputError, match=r"unknown patient id\(s\) 999; available: "
                                         r"101, 102, 103, 104"):
        load_dataset(phantom_root, ["101", "999"])


def test_folder_without_ground_truth_needs_an_roi(phantom_root: Path, tmp_path: Path):
    data = tmp_path / "test20-layout"
    shutil.copytree(phantom_root / "train25", data / "test20")
    with pytest.raises(InputError, match=r"4 case\(s\) .* have no ground truth .*101, 102, "
                                         r"103, 104.*roi .auto. with an roi_run"):
        load_dataset(data)
    shape = load_case(discover_cases(phantom_root)[0]).shape
    roi = np.zeros(shape, dtype=bool)
    roi[60:70, 60:70, :] = True
    with pytest.warns(UserWarning, match=r"have no ground truth .*101, 102.*Dice will not be "
                                         r"computed"):
        volumes = load_dataset(data, ["101", "102"], rois={"101": roi, "102": roi})
    assert [v.case_id for v in volumes] == ["101", "102"]
    assert all(v.labels is None for v in volumes)
    np.testing.assert_array_equal(volumes[0].roi, roi)
    assert volumes[0].image.shape == (3, *shape)


def test_given_roi_replaces_the_ground_truth_one(phantom_root: Path):
    case = discover_cases(phantom_root)[0]
    labelled = load_case(case)
    roi = np.zeros(labelled.shape, dtype=np.uint8)
    roi[10:20, 10:20, 1] = 3
    replaced = load_case(case, roi=roi)
    np.testing.assert_array_equal(replaced.roi, roi != 0)
    np.testing.assert_array_equal(replaced.labels, labelled.labels)
    with pytest.raises(InputError, match=r"case 101: the ROI has shape \(4, 4, 4\)"):
        load_case(case, roi=np.ones((4, 4, 4)))
    with pytest.raises(InputError, match="case 101: the given region of interest is empty"):
        load_case(case, roi=np.zeros(labelled.shape))
