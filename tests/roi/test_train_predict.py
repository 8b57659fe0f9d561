"""Training an ROI network on the phantom, its run folder, and the masks it writes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from helpers.roi_settings import TINY_SETTINGS

from deepgmm.data.dataset import load_dataset
from deepgmm.errors import CheckpointError, InputError
from deepgmm.roi.model import (
    CONFIG_FILE,
    MODEL_FILE,
    RoiSettings,
    check_settings,
    load_roi_run,
    read_roi_config,
)
from deepgmm.roi.predict import predict_folder, predict_mask, predict_probabilities
from deepgmm.roi.quality import case_dice, centre_error_mm, slice_dice
from deepgmm.roi.train import network_inputs, train_roi


def test_run_folder_holds_weights_and_config(tiny_run: Path):
    assert sorted(p.name for p in tiny_run.iterdir()) == [CONFIG_FILE, MODEL_FILE]
    config = read_roi_config(tiny_run)
    assert config["sequences"] == ["C0", "DE", "T2"]
    assert config["train_patients"] == ["101", "102", "103"]
    assert config["epoch"] == 2 and len(config["history"]) == 2
    assert config["n_train_slices"] == 9
    assert config["network"]["in_channels"] == 3 and config["network"]["channels"] == [4, 8, 16]
    assert config["spacing_mm"] == 3.0 and config["crop"] == 64
    assert config["settings"]["seed"] == 0 and config["train_seconds"] > 0


def test_same_seed_same_weights(phantom_volumes, tiny_run: Path, tmp_path: Path,
                                one_torch_thread):
    again = train_roi(phantom_volumes[:3], tmp_path / "again", settings=TINY_SETTINGS,
                      progress=False)
    first = load_roi_run(tiny_run)
    for (name, a), b in zip(first.network.state_dict().items(),
                            again.network.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert again.config["history"] == first.config["history"]


def test_training_learns_the_lv(learnt_run: Path, phantom_volumes):
    model = load_roi_run(learnt_run)
    history = model.config["history"]
    assert len(history) == 40 and history[-1] < 0.4 * history[0]
    # it has learnt the LV of the case it saw (on the input grid, after post-processing)
    vol = phantom_volumes[0]
    assert case_dice(predict_mask(model, vol.image, vol.zooms), vol.roi) > 0.8


def test_network_inputs_are_the_rois(phantom_volumes):
    image, target = network_inputs(phantom_volumes[:2], TINY_SETTINGS)
    assert image.shape == (6, 3, 64, 64) and target.shape == (6, 64, 64)
    # the LV area on the 3 mm grid matches the ground truth's on the 1.5 mm grid
    lv_mm2 = [float(v.roi.sum()) * 1.5 * 1.5 for v in phantom_volumes[:2]]
    assert float(target.sum()) * 9.0 == pytest.approx(sum(lv_mm2), rel=0.05)


def test_predictions_are_on_the_input_grid(tiny_run: Path, phantom_volumes):
    model = load_roi_run(tiny_run)
    vol = phantom_volumes[3]
    prob = predict_probabilities(model, vol.image, vol.zooms)
    assert prob.shape == vol.shape and prob.dtype == np.float32
    assert prob.min() >= 0.0 and prob.max() <= 1.0
    mask = predict_mask(model, vol.image, vol.zooms)
    assert mask.shape == vol.shape and mask.dtype == bool


def test_predict_folder_writes_masks_with_the_input_geometry(tiny_run: Path,
                                                             phantom_root: Path,
                                                             tmp_path: Path):
    out = tmp_path / "rois"
    results = predict_folder(tiny_run, phantom_root, out, ["103", "104"], progress=False)
    assert [r.case_id for r in results] == ["103", "104"]
    summary = json.loads((out / "roi_summary.json").read_text())
    assert [c["case_id"] for c in summary["cases"]] == ["103", "104"]
    for r in results:
        if r.file is None:
            continue
        written = nib.load(str(out / r.file))
        image = nib.load(str(phantom_root / "train25" / f"phantom_training_{r.case_id}_C0.nii.gz"))
        assert written.shape == image.shape
        np.testing.assert_allclose(written.affine, image.affine, atol=1e-6)
        np.testing.assert_allclose(written.get_qform(), image.affine, atol=1e-4)
        np.testing.assert_allclose(written.get_sform(), image.affine, atol=1e-6)
        data = np.asarray(written.dataobj)
        assert data.dtype == np.uint8 and set(np.unique(data)) <= {0, 1}
        assert sorted(np.flatnonzero(data.any(axis=(0, 1)))) == r.slices


def test_empty_prediction_is_reported_and_skipped(tiny_run: Path, phantom_root: Path,
                                                  tmp_path: Path, monkeypatch):
    import deepgmm.roi.predict as predict

    calls: list[int] = []

    def empty_for_102(model, image, zooms):
        """No LV in the second case predicted (102), LV everywhere in the others."""
        calls.append(1)
        return np.full(image.shape[1:], len(calls) != 2)

    monkeypatch.setattr(predict, "predict_mask", empty_for_102)
    with pytest.warns(UserWarning, match="case 102: no left ventricle found"):
        results = predict_folder(tiny_run, phantom_root, tmp_path / "o", ["101", "102", "103"],
                                 progress=False)
    by_case = {r.case_id: r for r in results}
    assert by_case["102"].file is None and by_case["102"].slices == []
    assert by_case["101"].file == "101_roi.nii.gz" and by_case["103"].file == "103_roi.nii.gz"
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [
        ".deepgmm-manifest.json", "101_roi.nii.gz", "103_roi.nii.gz", "roi_summary.json"]
    summary = json.loads((tmp_path / "o" / "roi_summary.json").read_text())
    assert summary["skipped"] == ["102"]


def test_other_sequences_refused_naming_both(tiny_run: Path, phantom_root: Path,
                                             tmp_path: Path):
    data = tmp_path / "data"
    shutil.copytree(phantom_root, data)
    for path in data.rglob("*_DE.nii.gz"):
        path.unlink()
    with pytest.raises(CheckpointError, match=r"trained on the sequences C0, DE, T2 .*has "
                                              r"C0, T2"):
        predict_folder(tiny_run, data, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_not_an_roi_run_refused(tmp_path: Path, phantom_root: Path):
    run = tmp_path / "run"
    run.mkdir()
    (run / CONFIG_FILE).write_text(json.dumps({"format_version": 1, "network": {}}))
    with pytest.raises(CheckpointError, match="is not an ROI run"):
        load_roi_run(run)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_roi_run(tmp_path / "missing")


def test_edited_weights_refused(tiny_run: Path, tmp_path: Path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    raw = bytearray((run / MODEL_FILE).read_bytes())
    raw[-1] ^= 0xFF
    (run / MODEL_FILE).write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_roi_run(run)


def test_bad_settings_refused():
    with pytest.raises(InputError, match="crop 100 must be divisible by"):
        check_settings(RoiSettings(crop=100))
    with pytest.raises(InputError, match="epochs"):
        check_settings(RoiSettings(epochs=0))
    with pytest.raises(InputError, match="threshold"):
        check_settings(RoiSettings(threshold=1.5))


def test_unlabelled_cases_cannot_train(phantom_root: Path, tmp_path: Path):
    vol = load_dataset(phantom_root, ["101"])[0]
    unlabelled = type(vol)(**{**vol.__dict__, "labels": None})
    with pytest.raises(InputError, match="no ground truth"):
        train_roi([unlabelled], tmp_path / "r", settings=TINY_SETTINGS, progress=False)


def test_quality_measures_hand_computed(phantom_volumes):
    vol = phantom_volumes[0]
    truth = np.zeros(vol.shape, dtype=bool)
    truth[10:20, 10:20, 0] = True        # 100 voxels
    pred = np.zeros_like(truth)
    pred[12:22, 10:20, 0] = True         # shifted by 2 voxels along x: overlap 80
    pred[0:2, 0:2, 1] = True             # a false positive in slice 1
    assert case_dice(pred, truth) == pytest.approx(2 * 80 / (104 + 100))
    per_slice = slice_dice(pred, truth)
    assert per_slice[0] == pytest.approx(0.8) and per_slice[1] == 0.0
    assert np.isnan(per_slice[2])
    # crop centres: middle non-empty slice is slice 1 for pred (slices 0, 1) -> (0.5, 0.5)
    # rounded to (1, 1); truth's is slice 0 -> (14.5, 14.5) rounded to (15, 15); 1.5 mm
    assert centre_error_mm(vol, pred, truth) == pytest.approx(np.hypot(14, 14) * 1.5)
    assert np.isnan(centre_error_mm(vol, np.zeros_like(truth), truth))
