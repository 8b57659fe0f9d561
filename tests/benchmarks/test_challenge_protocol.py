"""The pure parts of benchmarks/challenge_protocol.py (folds, scoring, table) and one fold
of the study on the phantom."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from deepgmm.data.slices import make_batch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "challenge_protocol.py"


@pytest.fixture(scope="module")
def cp():
    spec = importlib.util.spec_from_file_location("challenge_protocol", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["challenge_protocol"] = module
    spec.loader.exec_module(module)
    return module


def test_folds_are_cv_qualitys(cp):
    cv = sys.modules["cv_quality"]
    assert cp.FOLDS is cv.FOLDS
    patients = [str(p) for p in range(101, 126)]
    seen = []
    for fold in cp.FOLDS:
        train, test = cp.split_fold(patients, fold)
        assert test == sorted(cp.FOLDS[fold]) and len(train) == 20
        assert not set(train) & set(test) and sorted(train + test) == patients
        seen += test
    assert sorted(seen) == patients
    # a data set holding only some patients: the fold's test patients among them
    assert cp.split_fold(["101", "102", "103", "104"], 2) == (["102", "104"], ["101", "103"])


def test_case_scores_hand_computed(cp):
    truth = np.zeros((4, 4, 2), dtype=np.uint8)
    pred = np.zeros_like(truth)
    truth[0, :, 0] = 4          # scar: 4 voxels in slice 0 ...
    truth[1, :2, 1] = 4         # ... and 2 in slice 1
    truth[2, :, 1] = 3          # edema: 4 voxels
    pred[0, :, 0] = 4           # 4 scar voxels right
    pred[1, :2, 1] = 3          # 2 scar voxels called edema
    pred[3, :, 0] = 4           # 4 scar voxels where there is nothing
    # scar: |P| = 8, |T| = 6, overlap 4 -> 8/14; edema ∪ scar: |P| = 10, |T| = 10, overlap 6
    scar, both = cp.case_scores(pred, truth)
    assert scar == pytest.approx(8 / 14) and both == pytest.approx(12 / 20)
    # a case without scar anywhere: NaN; prediction all background: 0
    empty = np.zeros_like(truth)
    assert all(math.isnan(v) for v in cp.case_scores(empty, empty))
    assert cp.case_scores(empty, truth) == (0.0, 0.0)


def test_predicted_volumes_put_the_slices_back(cp, phantom_volumes):
    volumes = phantom_volumes[:2]
    batch = make_batch(volumes, selection={"101": [0, 2], "102": [1]}, crop_size=(64, 64))
    labels = torch.where(batch.roi, batch.labels, 0)
    probs = torch.nn.functional.one_hot((labels - 1).clamp(min=0), 4).permute(0, 3, 1, 2)
    shapes = {v.case_id: v.shape for v in phantom_volumes[:3]}
    out = cp.predicted_volumes(batch, probs.numpy().astype(np.float32), shapes)
    assert set(out) == {"101", "102", "103"}
    for vol, slices in ((volumes[0], [0, 2]), (volumes[1], [1])):
        expected = np.zeros(vol.shape, dtype=np.uint8)
        expected[:, :, slices] = np.where(vol.roi, vol.labels, 0)[:, :, slices]
        np.testing.assert_array_equal(out[vol.case_id], expected)
    assert not out["103"].any()  # no segmented slice: all background


def test_table_means_sds_and_the_loss_against_gt(cp):
    def meta(roi, fold, cases, skipped=()):
        return {"method": "em-svgmm", "roi": roi, "fold": fold, "seed": 0, "cases": cases,
                "roi_skipped": list(skipped)}

    metas = [meta("gt", 1, {"a": [0.5, 0.7], "b": [0.3, 0.5]}),
             meta("auto", 1, {"a": [0.4, 0.6], "b": [0.0, 0.1]}, ["b"]),
             meta("gt", 2, {"c": [float("nan"), 0.9]})]
    rows = cp.table_rows(metas)
    assert [(r.method, r.roi) for r in rows] == [("em-svgmm", "auto"), ("em-svgmm", "gt")]
    auto, gt = rows
    assert gt.folds == [1, 2] and auto.folds == [1] and auto.skipped == ["b"]
    assert cp.mean_sd(gt.scar) == pytest.approx((0.4, math.sqrt(0.02)))
    text = cp.format_table(rows)
    assert "| em-svgmm | gt | 1,2 | 0 | 3 | 0.400 ± 0.141 | 0.700 ± 0.200 | - | - | - |" in text
    # the difference is shown only where both rows cover the same folds
    assert "| em-svgmm | auto | 1 | 0 | 2 | 0.200 ± 0.283 | 0.350 ± 0.354 | - | - | b |" in text
    rows = cp.table_rows(metas[:2])
    assert "| -0.200 | -0.250 | b |" in cp.format_table(rows)


def test_one_fold_on_the_phantom(cp, phantom_root, phantom_volumes, tmp_path, capsys):
    from helpers.roi_settings import TINY_SETTINGS

    from deepgmm.roi.train import train_roi

    runs = tmp_path / "runs"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:  # fold 2's test patients among the phantom's 101-104 are 101 and 103
        train_roi([v for v in phantom_volumes if v.case_id in ("102", "104")], runs / "fold2",
                  settings=TINY_SETTINGS, progress=False)
        train_roi(phantom_volumes[:1], runs / "fold3", settings=TINY_SETTINGS, progress=False)
        cache = tmp_path / "cache"
        args = ["--root", str(phantom_root), "--roi-runs", str(runs), "--cache", str(cache),
                "--methods", "em-svgmm", "--threads", "1"]
        cp.main([*args, "--folds", "2", "--markdown", str(tmp_path / "t.md")])
        for roi in ("auto", "gt"):
            unit = json.loads((cache / "em-svgmm" / roi / "fold2-seed0.json").read_text())
            assert unit["test_patients"] == ["101", "103"]
            assert unit["train_patients"] == ["102", "104"]
            assert sorted(unit["cases"]) == ["101", "103"]
        gt = json.loads((cache / "em-svgmm" / "gt" / "fold2-seed0.json").read_text())
        with np.load(cache / "em-svgmm" / "gt" / "fold2-seed0.npz") as data:
            for vol in phantom_volumes:
                if vol.case_id in ("101", "103"):
                    pred = data[f"case_{vol.case_id}"]
                    assert pred.shape == vol.shape and ((pred > 0) == vol.roi).all()
                    assert gt["cases"][vol.case_id] == pytest.approx(
                        list(cp.case_scores(pred, vol.labels)), nan_ok=True)
        assert "| em-svgmm | gt | 2 | 0 | 2 |" in (tmp_path / "t.md").read_text()
        capsys.readouterr()
        cp.main([*args, "--folds", "2"])  # everything cached: nothing runs again
        assert "0 unit(s) to run" in capsys.readouterr().out
        with pytest.raises(SystemExit, match="fold3 was trained on patients 101, not fold 3"):
            cp.main([*args, "--folds", "3"])
    finally:
        torch.set_num_threads(before)


def test_a_case_whose_roi_exceeds_the_crop_is_skipped_not_fatal(cp, phantom_volumes,
                                                                monkeypatch):
    import dataclasses

    monkeypatch.setattr(cp, "CROP", (64, 64))
    good = phantom_volumes[0]
    roi = good.roi.copy()
    roi[0, 0, :] = True  # a false detection in a corner, far outside a 64 x 64 crop
    bad = dataclasses.replace(phantom_volumes[1], roi=roi)
    skipped: list[str] = ["109"]
    kept = cp.cut_or_skip([good, bad], skipped)
    assert [v.case_id for v in kept] == [good.case_id]
    assert skipped == ["109", bad.case_id]
