"""The ROI source of the segmenting commands: gt, auto (an ROI run) or a folder of masks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from deepgmm.data.nifti import save_nifti
from deepgmm.errors import CheckpointError, InputError
from deepgmm.roi.source import RoiSource, load_with_roi, parse_roi_option


def _disc_masks(shape):
    mask = np.zeros(shape, dtype=bool)
    mask[50:70, 55:75, :] = True
    return mask


@pytest.fixture
def fixed_prediction(monkeypatch):
    """predict_mask returns a fixed block, and nothing for the second case predicted."""
    import deepgmm.roi.predict as predict

    calls: list[int] = []

    def fake(model, image, zooms):
        calls.append(1)
        return _disc_masks(image.shape[1:]) if len(calls) != 2 else np.zeros(
            image.shape[1:], dtype=bool)

    monkeypatch.setattr(predict, "predict_mask", fake)
    return calls


def test_parse_roi_option():
    assert parse_roi_option("gt", None) == RoiSource(kind="gt")
    assert parse_roi_option("auto", "run").path == "run"
    with pytest.raises(InputError, match="roi .auto. needs roi_run"):
        parse_roi_option("auto", None)
    with pytest.raises(InputError, match="roi_run applies to roi .auto. only"):
        parse_roi_option("gt", "run")
    with pytest.raises(InputError, match="'nowhere' is not a folder"):
        parse_roi_option("nowhere", None)


def test_gt_is_the_ground_truth(phantom_root: Path, phantom_volumes):
    volumes = load_with_roi(phantom_root, RoiSource(kind="gt"), ["101"])
    np.testing.assert_array_equal(volumes[0].roi, phantom_volumes[0].roi)


def test_auto_on_a_labels_free_folder(tiny_run: Path, phantom_root: Path, tmp_path: Path,
                                      fixed_prediction):
    data = tmp_path / "unlabelled"
    shutil.copytree(phantom_root / "train25", data / "test20")
    source = parse_roi_option("auto", tiny_run)
    with pytest.warns(UserWarning) as caught:
        volumes = load_with_roi(data, source, ["101", "102", "103"], progress=False)
    messages = [str(w.message) for w in caught]
    assert any("case 102: no left ventricle found; case skipped" in m for m in messages)
    assert any("Dice will not be computed" in m for m in messages)
    assert [v.case_id for v in volumes] == ["101", "103"]
    assert source.skipped == ["102"]
    assert all(v.labels is None for v in volumes)
    np.testing.assert_array_equal(volumes[0].roi, _disc_masks(volumes[0].shape))


def test_auto_keeps_the_ground_truth_for_dice(tiny_run: Path, phantom_root: Path,
                                              phantom_volumes, fixed_prediction):
    volumes = load_with_roi(phantom_root, RoiSource(kind="auto", path=str(tiny_run)),
                            ["101"], progress=False)
    np.testing.assert_array_equal(volumes[0].labels, phantom_volumes[0].labels)
    np.testing.assert_array_equal(volumes[0].roi, _disc_masks(volumes[0].shape))


def test_auto_with_other_sequences(tiny_run: Path, phantom_root: Path, tmp_path: Path):
    data = tmp_path / "d"
    shutil.copytree(phantom_root, data)
    for path in data.rglob("*_C0.nii.gz"):
        path.unlink()
    with pytest.raises(CheckpointError, match=r"sequences C0, DE, T2 .* has DE, T2"):
        load_with_roi(data, RoiSource(kind="auto", path=str(tiny_run)), progress=False)


def test_folder_of_masks(phantom_root: Path, tmp_path: Path):
    folder = tmp_path / "rois"
    ref = nib.load(str(phantom_root / "train25" / "phantom_training_101_C0.nii.gz"))
    save_nifti(_disc_masks(ref.shape).astype(np.uint8), ref.affine, folder / "101_roi.nii.gz")
    volumes = load_with_roi(phantom_root, parse_roi_option(str(folder), None), ["101"])
    np.testing.assert_array_equal(volumes[0].roi, _disc_masks(ref.shape))
    assert volumes[0].labels is not None
    # a case with no mask file
    with pytest.raises(InputError, match=r"case 102: no ROI mask .*102_roi\.nii\.gz"):
        load_with_roi(phantom_root, RoiSource(kind="folder", path=str(folder)), ["102"])
    # ... unless roi predict skipped it: then it is left out with a warning
    (folder / "roi_summary.json").write_text(json.dumps({"skipped": ["102"]}))
    source = RoiSource(kind="folder", path=str(folder))
    with pytest.warns(UserWarning, match="case 102: its ROI mask is missing"):
        volumes = load_with_roi(phantom_root, source, ["101", "102"])
    assert [v.case_id for v in volumes] == ["101"] and source.skipped == ["102"]


def test_folder_mask_on_another_grid(phantom_root: Path, tmp_path: Path):
    folder = tmp_path / "rois"
    ref = nib.load(str(phantom_root / "train25" / "phantom_training_101_C0.nii.gz"))
    moved = ref.affine.copy()
    moved[0, 3] += 5.0
    save_nifti(_disc_masks(ref.shape).astype(np.uint8), moved, folder / "101_roi.nii.gz")
    with pytest.raises(InputError, match=r"101_roi\.nii\.gz.*101_C0\.nii\.gz.*not in the same "
                                         r"space"):
        load_with_roi(phantom_root, RoiSource(kind="folder", path=str(folder)), ["101"])
