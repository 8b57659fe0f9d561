"""Clinical measures per case: volumes in mL against a hand count on the phantom, burden
percentages and the per-case 3-D Dice of scar and edema ∪ scar."""

from __future__ import annotations

import csv

import nibabel as nib
import numpy as np
import pytest
import torch

from deepgmm.report.clinical import CASE_COLUMNS, case_measures, label_counts
from deepgmm.report.outputs import write_segmentation
from deepgmm.types import SegmentationResult

CODES = {"blood": 500, "myocardium": 200, "edema": 1220, "scar": 2221}


def _oracle(batch, labels=None):
    truth = batch.labels if labels is None else labels
    onehot = torch.nn.functional.one_hot(truth.clamp(min=1) - 1, 4).permute(0, 3, 1, 2)
    n = len(batch)
    return SegmentationResult(onehot.float(), torch.zeros(n), torch.ones(n, dtype=torch.int64),
                              torch.zeros(n), torch.zeros(n, 4, 3), "oracle")


def test_label_counts_is_a_bincount_per_slice():
    labels = np.array([[[0, 1], [4, 4]], [[2, 2], [2, 3]]])
    np.testing.assert_array_equal(label_counts(labels), [[1, 1, 0, 0, 2], [0, 0, 3, 1, 0]])


def test_volumes_match_a_hand_count_of_the_ground_truth_files(tmp_path, phantom_root,
                                                              phantom_volumes, phantom_batch):
    """The truth as prediction: every volume equals (voxels of the code on the segmented
    slices of the _gd file) x the header's voxel volume."""
    out = tmp_path / "out"
    summary = write_segmentation(out, phantom_volumes, phantom_batch, _oracle(phantom_batch),
                                 matching="none", figures=False, progress=False,
                                 class_identity=True)
    with open(out / "cases.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == CASE_COLUMNS
        rows = {r["case"]: r for r in reader}
    assert sorted(rows) == ["101", "102", "103", "104"]
    for case, row in rows.items():
        gd = nib.load(str(next(phantom_root.rglob(f"*_{case}_gd.nii.gz"))))
        zs = [z for c, z in zip(phantom_batch.case_ids, phantom_batch.slice_indices,
                                strict=True) if c == case]
        data = np.asanyarray(gd.dataobj)[:, :, zs]
        voxel_ml = float(np.prod(gd.header.get_zooms()[:3])) / 1000.0
        hand = {name: float((data == code).sum()) * voxel_ml for name, code in CODES.items()}
        assert hand["scar"] > 0 and hand["edema"] > 0
        for name, ml in hand.items():
            assert float(row[f"{name}_ml"]) == pytest.approx(ml, rel=1e-12)
            assert float(row[f"gt_{name}_ml"]) == pytest.approx(ml, rel=1e-12)
        lv = hand["myocardium"] + hand["edema"] + hand["scar"]
        assert float(row["lv_myocardium_ml"]) == pytest.approx(lv)
        assert float(row["scar_pct"]) == pytest.approx(100 * hand["scar"] / lv)
        assert float(row["edema_pct"]) == pytest.approx(100 * hand["edema"] / lv)
        assert float(row["dice3d_scar"]) == 1.0 and float(row["dice3d_edema_scar"]) == 1.0
        assert int(row["n_slices"]) == len(zs)
        assert summary["clinical"][case]["scar_ml"] == pytest.approx(hand["scar"])


def test_three_d_dice_of_scar_and_edema_union_scar_by_hand():
    """Two slices of one case: one scar pixel called edema, one edema pixel called blood."""
    truth = np.zeros((2, 4, 4), dtype=np.int64)
    truth[0, 0, :3] = 4          # 3 scar
    truth[1, 1, :2] = 3          # 2 edema
    truth[1, 2, :] = 2           # 4 healthy myocardium
    pred = truth.copy()
    pred[0, 0, 0] = 3            # scar -> edema: scar 2/3, edema∪scar unchanged here
    pred[1, 1, 0] = 1            # edema -> blood
    m = case_measures(["a", "a"], pred, truth, {"a": (2.0, 2.0, 5.0)}, "test")[0]
    voxel_ml = 0.02
    assert m["scar_ml"] == pytest.approx(2 * voxel_ml) and m["gt_scar_ml"] == pytest.approx(
        3 * voxel_ml)
    assert m["blood_ml"] == pytest.approx(voxel_ml) and m["edema_ml"] == pytest.approx(
        2 * voxel_ml)
    assert m["dice3d_scar"] == pytest.approx(2 * 2 / (2 + 3))
    # edema ∪ scar: truth 5 pixels, prediction 4 (one became blood), overlap 4
    assert m["dice3d_edema_scar"] == pytest.approx(2 * 4 / (4 + 5))
    assert m["scar_pct"] == pytest.approx(100 * 2 / (4 + 2 + 2))
    assert m["gt_edema_pct"] == pytest.approx(100 * 2 / (4 + 2 + 3))


def test_without_truth_the_truth_columns_are_empty():
    pred = np.zeros((1, 3, 3), dtype=np.int64)
    m = case_measures(["a"], pred, None, {"a": (1.0, 1.0, 1.0)}, "test")[0]
    assert m["gt_scar_ml"] is None and m["dice3d_scar"] is None
    assert m["blood_ml"] == 0.0 and np.isnan(m["scar_pct"])


def test_results_csv_has_assd_beside_hd95(tmp_path, phantom_volumes, phantom_batch):
    """With the truth as prediction every ASSD is 0; the summary averages it."""
    out = tmp_path / "out"
    summary = write_segmentation(out, phantom_volumes, phantom_batch, _oracle(phantom_batch),
                                 matching="hungarian", figures=False, progress=False)
    with open(out / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(phantom_batch)
    assert {r[f"assd_{c}"] for r in rows for c in CODES} == {"0.0"}
    assert summary["assd"] == dict.fromkeys(CODES, 0.0)
