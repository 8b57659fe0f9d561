"""write_segmentation on tiny hand-made cases: files, geometry, codes, tables, atomicity."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest
import torch

from deepgmm.errors import InputError
from deepgmm.report import outputs
from deepgmm.report.outputs import write_segmentation
from deepgmm.report.tables import RESULT_COLUMNS
from deepgmm.types import CLASS_NAMES, CLASS_TO_MYOPS

SUMMARY_KEYS = {"method", "n_slices", "matching", "dice", "dice_sd", "hd95", "nll",
                "seconds_per_slice", "class_order", "maps", "roi", "naming",
                "clinical", "assd", "anatomy", "anatomy_own_maps"}
MYOPS_VALUES = {"0": "background", "500": "blood", "200": "myocardium", "1220": "edema",
                "2221": "scar"}
CLASS_KEYS = {"blood", "myocardium", "edema", "scar"}


@pytest.fixture
def case(synth):
    volumes = synth.default_cases()
    batch = synth.hand_batch(volumes, synth.SLICES, synth.ORIGINS)
    result, perm = synth.shuffled_onehot_result(batch.labels, seed=4)
    return volumes, batch, result, perm


@pytest.mark.parametrize("matching", ["hungarian", "greedy"])
def test_onehot_truth_round_trips_to_the_input_labels(tmp_path, case, synth, matching):
    """The matched maps equal the truth; the own maps hold the shuffled clusters as fitted."""
    volumes, batch, result, perm = case
    out = tmp_path / "out"
    summary = write_segmentation(out, volumes, batch, result, matching=matching,
                                 progress=False)
    codes = np.asarray(CLASS_TO_MYOPS)
    rows = {(c, int(z)): b for b, (c, z) in enumerate(zip(batch.case_ids,
                                                          batch.slice_indices, strict=True))}
    for v in volumes:
        seg_img = nib.load(str(out / f"{v.case_id}_seg_matched.nii.gz"))
        prob_img = nib.load(str(out / f"{v.case_id}_prob_matched.nii.gz"))
        own_img = nib.load(str(out / f"{v.case_id}_seg.nii.gz"))
        own_prob_img = nib.load(str(out / f"{v.case_id}_prob.nii.gz"))
        for img in (seg_img, prob_img, own_img, own_prob_img):
            np.testing.assert_allclose(img.affine, v.affine, atol=1e-5)
            assert int(img.header["qform_code"]) > 0 and int(img.header["sform_code"]) > 0
            np.testing.assert_allclose(img.get_qform(), v.affine, atol=1e-5)
        seg = np.asanyarray(seg_img.dataobj)
        own = np.asanyarray(own_img.dataobj)
        assert seg.dtype == own.dtype == np.int16 and seg.shape == own.shape == v.shape
        prob = np.asanyarray(prob_img.dataobj)
        own_prob = np.asanyarray(own_prob_img.dataobj)
        assert prob.dtype == own_prob.dtype == np.float32
        assert prob.shape == own_prob.shape == (*v.shape, 4)
        for z in range(v.shape[2]):
            if z in synth.SLICES[v.case_id]:
                np.testing.assert_array_equal(seg[:, :, z], codes[v.labels[:, :, z]])
                inside = v.roi[:, :, z]
                np.testing.assert_array_equal(prob[:, :, z].argmax(-1)[inside] + 1,
                                              v.labels[:, :, z][inside])
                assert np.all(prob[:, :, z][~inside] == 0)
                np.testing.assert_allclose(prob[:, :, z][inside].max(-1), 0.925, rtol=1e-6)
                # own map: the cluster that holds class c is perm[b, c - 1], numbered 1..4
                cluster = np.concatenate([[-1], perm[rows[(v.case_id, z)]]])
                expected = np.where(inside, cluster[v.labels[:, :, z]] + 1, 0)
                np.testing.assert_array_equal(own[:, :, z], expected)
                np.testing.assert_array_equal(own_prob[:, :, z].argmax(-1)[inside] + 1,
                                              expected[inside])
                assert np.all(own_prob[:, :, z][~inside] == 0)
            else:
                for a in (seg, own, prob, own_prob):
                    assert np.all(a[:, :, z] == 0)
    assert set(np.unique(np.asanyarray(nib.load(
        str(out / "101_seg_matched.nii.gz")).dataobj))) == {0, 200, 500, 1220, 2221}
    assert set(np.unique(np.asanyarray(nib.load(str(out / "101_seg.nii.gz")).dataobj))) == {
        0, 1, 2, 3, 4}
    assert set(summary) == SUMMARY_KEYS
    assert json.loads((out / "summary.json").read_text()) == summary
    assert summary["n_slices"] == 3 and summary["matching"] == matching
    assert summary["roi"] == "given"  # the volumes' own ROI (no roi_source passed)
    assert summary["method"] == "test"
    assert summary["dice"] == dict.fromkeys(CLASS_KEYS, 1.0)
    assert summary["dice_sd"] == dict.fromkeys(CLASS_KEYS, 0.0)
    assert summary["hd95"] == dict.fromkeys(CLASS_KEYS, 0.0)
    assert summary["nll"] == pytest.approx(1.5)
    assert summary["seconds_per_slice"] == pytest.approx(0.5)
    assert summary["class_order"] == "clusters"
    assert summary["maps"] == {
        "<case>_seg.nii.gz": {"labels": "as fitted", "values": {
            "0": "background", "1": "cluster 1", "2": "cluster 2", "3": "cluster 3",
            "4": "cluster 4"}},
        "<case>_prob.nii.gz": {"labels": "as fitted",
                               "channels": ["cluster 1", "cluster 2", "cluster 3",
                                            "cluster 4"]},
        "<case>_seg_matched.nii.gz": {"labels": matching, "values": MYOPS_VALUES},
        "<case>_prob_matched.nii.gz": {"labels": matching, "channels": list(CLASS_NAMES)},
    }


def test_class_identity_writes_myops_codes_and_no_matched_maps(tmp_path, case, synth):
    """With the class order fixed (μ_data) and matching none, the own map holds MyoPS codes
    of the components in order, and no matched file is written."""
    volumes, batch, result, perm = case
    out = tmp_path / "out"
    summary = write_segmentation(out, volumes, batch, result, matching="none",
                                 figures=False, progress=False, class_identity=True)
    sidecars = [f"{c}_{kind}{ext}" for c in ("101", "102")
                for kind, ext in (("prob", ".json"), ("seg", ".ctbl"), ("seg", ".itksnap.txt"),
                                  ("seg", ".tsv"))]
    assert sorted(p.name for p in out.iterdir()) == sorted([
        "101_prob.nii.gz", "101_seg.nii.gz", "102_prob.nii.gz", "102_seg.nii.gz",
        "results.csv", "cases.csv", "summary.json", "dseg.tsv", "run.json",
        "report.html", ".deepgmm-manifest.json", *sidecars])
    assert summary["class_order"] == "mu_data"
    assert summary["maps"] == {
        "<case>_seg.nii.gz": {"labels": "as fitted", "values": MYOPS_VALUES},
        "<case>_prob.nii.gz": {"labels": "as fitted", "channels": list(CLASS_NAMES)}}
    codes = np.asarray(CLASS_TO_MYOPS)
    v = volumes[0]
    z = synth.SLICES[v.case_id][0]
    b = list(zip(batch.case_ids, batch.slice_indices, strict=True)).index((v.case_id, z))
    own = np.asanyarray(nib.load(str(out / "101_seg.nii.gz")).dataobj)[:, :, z]
    cluster = np.concatenate([[-1], perm[b]])
    expected = np.where(v.roi[:, :, z], codes[cluster[v.labels[:, :, z]] + 1], 0)
    np.testing.assert_array_equal(own, expected)


def test_results_csv_rows(tmp_path, case):
    volumes, batch, result, _ = case
    out = tmp_path / "out"
    write_segmentation(out, volumes, batch, result, progress=False)
    with open(out / "results.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == RESULT_COLUMNS
        rows = list(reader)
    assert [(r["case"], r["slice"]) for r in rows] == [("101", "1"), ("101", "2"), ("102", "1")]
    assert all(float(r["dice_scar"]) == 1.0 and float(r["hd95_blood"]) == 0.0 for r in rows)
    assert [int(r["iterations"]) for r in rows] == [10, 11, 12]
    assert [float(r["nll"]) for r in rows] == pytest.approx([1.0, 1.5, 2.0])
    assert {r["matching"] for r in rows} == {"hungarian"} and {r["method"] for r in rows} == {
        "test"}
    figs = sorted(p.name for p in (out / "figures").iterdir())
    assert figs == ["101_slice1.png", "101_slice2.png", "102_slice1.png"]
    assert (out / "figures" / "101_slice1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_wrong_matching_lowers_dice_by_hand(tmp_path, synth, case):
    # identity matching of shuffled clusters: class c gets cluster c, i.e. the true class
    # perm^-1[c]; Dice is 1 where perm[b, c] == c and 0 elsewhere (classes are disjoint)
    volumes, batch, result, perm = case
    summary = write_segmentation(tmp_path / "out", volumes, batch, result, matching="none",
                                 figures=False, progress=False)
    expected = (perm == np.arange(4)).astype(float).mean(axis=0)
    got = [summary["dice"][k] for k in ("blood", "myocardium", "edema", "scar")]
    np.testing.assert_allclose(got, expected)
    assert not (tmp_path / "out" / "figures").exists()


def test_without_ground_truth(tmp_path, synth):
    volumes = synth.default_cases()
    batch = synth.hand_batch(volumes, synth.SLICES, synth.ORIGINS, with_labels=False)
    labelled = synth.hand_batch(volumes, synth.SLICES, synth.ORIGINS)
    result, _ = synth.shuffled_onehot_result(labelled.labels)
    with pytest.raises(InputError, match="needs ground-truth"):
        write_segmentation(tmp_path / "a", volumes, batch, result, progress=False)
    assert not (tmp_path / "a").exists()
    summary = write_segmentation(tmp_path / "b", volumes, batch, result, matching="none",
                                 progress=False)
    assert summary["dice"] == dict.fromkeys(CLASS_KEYS) and summary["hd95"] == dict.fromkeys(
        CLASS_KEYS)
    with open(tmp_path / "b" / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows[0]["dice_blood"] == "" and rows[0]["hd95_scar"] == ""
    assert rows[0]["nll"] != ""
    assert len(list((tmp_path / "b" / "figures").iterdir())) == 3


def test_failure_leaves_no_half_output(tmp_path, case, monkeypatch):
    volumes, batch, result, _ = case
    calls = []

    def broken_figure(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        path.write_bytes(b"png")

    monkeypatch.setattr(outputs, "slice_figure", broken_figure)
    with pytest.raises(RuntimeError, match="disk full"):
        write_segmentation(tmp_path / "out", volumes, batch, result, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_output_folder_checks(tmp_path, case):
    volumes, batch, result, _ = case
    data = tmp_path / "data"
    data.mkdir()
    source = data / "x_101_C0.nii.gz"
    source.write_bytes(b"input")
    volumes[0].source = str(source)
    for bad in (data, tmp_path):
        with pytest.raises(InputError, match="contains the input"):
            write_segmentation(bad, volumes, batch, result, progress=False)
    assert source.read_bytes() == b"input"
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not an earlier deepgmm output"):
        write_segmentation(foreign, volumes, batch, result, progress=False)
    assert (foreign / "notes.txt").read_text() == "mine"
    # an earlier output is replaced as a whole, but only while it holds nothing but what
    # deepgmm wrote there: a file of the user's in it is kept and the folder refused
    out = tmp_path / "out"
    write_segmentation(out, volumes, batch, result, figures=False, progress=False)
    (out / "summary.json").write_text("{}")  # deepgmm's own file: replaced
    with pytest.warns(UserWarning, match="replaced the earlier output"):
        write_segmentation(out, volumes, batch, result, figures=False, progress=False)
    assert (out / "summary.json").read_text() != "{}"
    (out / "stale.txt").write_text("old")
    with pytest.raises(InputError, match="holds files deepgmm did not write: stale.txt"):
        write_segmentation(out, volumes, batch, result, figures=False, progress=False)
    assert (out / "stale.txt").read_text() == "old" and (out / "summary.json").is_file()


def test_mismatched_inputs(tmp_path, case):
    volumes, batch, result, _ = case
    bad = type(result)(**{**result.__dict__,
                          "responsibilities": result.responsibilities[:, :, :4]})
    with pytest.raises(InputError, match="do not match the batch"):
        write_segmentation(tmp_path / "o", volumes, batch, bad, progress=False)
    k5 = type(result)(**{**result.__dict__, "responsibilities": torch.cat(
        [result.responsibilities, result.responsibilities[:, :1]], 1)})
    with pytest.raises(InputError, match="K = 4"):
        write_segmentation(tmp_path / "o", volumes, batch, k5, progress=False)
    with pytest.raises(InputError, match="no volume given for case"):
        write_segmentation(tmp_path / "o", volumes[:1], batch, result, progress=False)
    nan = result.responsibilities.clone()
    nan[2, 1, 3, 3] = float("nan")  # inside the ROI of case 102, slice 1
    assert bool(batch.roi[2, 3, 3])
    with pytest.raises(InputError, match="NaN or infinite inside the ROI of case 102 slice 1"):
        write_segmentation(tmp_path / "o", volumes, batch,
                           type(result)(**{**result.__dict__, "responsibilities": nan}),
                           progress=False)
    with pytest.raises(InputError, match="matching must be one of"):
        write_segmentation(tmp_path / "o", volumes, batch, result, matching="oracle",
                           progress=False)
    assert not (tmp_path / "o").exists()


def test_nan_outside_roi_is_ignored_and_missing_spacing_uses_zooms(tmp_path, case):
    volumes, batch, result, _ = case
    resp = result.responsibilities.clone()
    resp[:, :, 0, 0] = float("nan")  # the crop corner is outside every ROI
    assert not bool(batch.roi[:, 0, 0].any())
    nan_out = type(result)(**{**result.__dict__, "responsibilities": resp})
    with_spacing = write_segmentation(tmp_path / "a", volumes, batch, nan_out,
                                      matching="none", figures=False, progress=False)
    batch.spacing = np.ones((0, 2))
    without = write_segmentation(tmp_path / "b", volumes, batch, nan_out, matching="none",
                                 figures=False, progress=False)
    assert without["hd95"] == with_spacing["hd95"]
    assert any(v not in (None, 0.0) for v in without["hd95"].values())
    prob = np.asanyarray(nib.load(str(tmp_path / "a" / "101_prob.nii.gz")).dataobj)
    assert np.isfinite(prob).all()


def test_zoom_box_frames_the_labels_with_a_margin() -> None:
    from deepgmm.report.figures import zoom_box

    pred = np.zeros((64, 64), dtype=int)
    pred[20:30, 30:40] = 1  # 10 x 10 foreground
    rows, cols = zoom_box([pred], margin=0.5, min_size=4)
    assert (rows.start, rows.stop, cols.start, cols.stop) == (15, 35, 25, 45)
    # Small foreground grows to min_size; the window never leaves the map.
    corner = np.zeros((64, 64), dtype=int)
    corner[0:2, 62:64] = 3
    rows, cols = zoom_box([corner], margin=0.0, min_size=24)
    assert rows.start == 0 and cols.stop == 64 and rows.stop - rows.start >= 12
    assert zoom_box([np.zeros((8, 8), dtype=int)]) == (slice(0, 8), slice(0, 8))
