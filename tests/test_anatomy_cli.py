"""The anatomy rule end to end: `em` writes label maps under it by default, `--recipe
published` gives the most likely class, `evaluate` re-matches under the run's rule."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from deepgmm.anatomy import anatomical_labels
from deepgmm.cli import app
from deepgmm.data.myops import labels_to_classes

CLASS_CODES = np.array([0, 500, 200, 1220, 2221])


def _run(*args) -> None:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def mu(phantom_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("mu") / "mu.json"
    _run("mu-data", phantom_root, "--out", path, "--patients", "103", "104", "--crop", "64")
    return path


def _em(root: Path, out: Path, mu: Path, *extra) -> dict:
    _run("em", root, "--out", out, "--model", "em-svgmm", "--mu-data", mu, "--patients",
         "101", "102", "--crop", "64", "--matching", "none", "--no-figures", "--no-progress",
         *extra)
    return json.loads((out / "summary.json").read_text())


def _maps(out: Path, case: str) -> tuple[np.ndarray, np.ndarray]:
    seg = np.asanyarray(nib.load(str(out / f"{case}_seg.nii.gz")).dataobj)
    prob = np.asanyarray(nib.load(str(out / f"{case}_prob.nii.gz")).dataobj)
    return seg, prob


def test_default_maps_follow_the_lv_dice_rule_and_published_the_argmax(phantom_root, mu,
                                                                       tmp_path):
    # --fusion none: the same probabilities under every rule, so only the rule differs
    runs = {"lv-dice": _em(phantom_root, tmp_path / "lv-dice", mu, "--fusion", "none"),
            "lv": _em(phantom_root, tmp_path / "lv", mu, "--fusion", "none", "--anatomy", "lv"),
            "none": _em(phantom_root, tmp_path / "none", mu, "--recipe", "published")}
    for rule, summary in runs.items():
        assert summary["anatomy"] == summary["anatomy_own_maps"] == rule
        assert summary["class_order"] == "mu_data"
    zooms = nib.load(str(tmp_path / "lv" / "101_seg.nii.gz")).header.get_zooms()[:2]
    changed = dict.fromkeys(("lv-dice", "lv"), 0)
    for case in ("101", "102"):
        seg_pub, prob_pub = _maps(tmp_path / "none", case)
        inside = prob_pub.sum(axis=-1) > 0                 # (X, Y, Z) segmented pixels
        np.testing.assert_array_equal(seg_pub, np.where(
            inside, CLASS_CODES[prob_pub.argmax(axis=-1) + 1], 0))
        for rule, decision in (("lv-dice", "dice"), ("lv", "argmax")):
            seg, prob = _maps(tmp_path / rule, case)
            np.testing.assert_array_equal(prob, prob_pub)  # the probabilities as fitted
            for z in np.nonzero(inside.any(axis=(0, 1)))[0]:
                expected = anatomical_labels(np.moveaxis(prob[:, :, z], -1, 0)[None],
                                             inside[None, :, :, z], np.array([zooms]),
                                             wall_decision=decision)[0]
                np.testing.assert_array_equal(seg[:, :, z], CLASS_CODES[expected])
                changed[rule] += int((seg[:, :, z] != seg_pub[:, :, z]).sum())
    assert changed["lv"] > 0 and changed["lv-dice"] > 0  # the rules did something


def test_evaluate_rematches_under_the_runs_rule(phantom_root, mu, tmp_path):
    out = tmp_path / "lv"
    _run("em", phantom_root, "--out", out, "--model", "em-gmm", "--patients", "101", "102",
         "--crop", "64", "--matching", "hungarian", "--no-figures", "--no-progress")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["anatomy"] == "lv-dice"
    res = CliRunner().invoke(app, ["evaluate", str(phantom_root), "--out", str(out), "--matching",
                                   "hungarian"])
    assert res.exit_code == 0, res.output
    evaluation = json.loads((out / "evaluation.json").read_text())
    for name, value in summary["dice"].items():
        assert evaluation["dice"][name] == pytest.approx(value, abs=1e-9), name
    seg = np.asanyarray(nib.load(str(out / "101_seg_matched.nii.gz")).dataobj)
    assert set(np.unique(labels_to_classes(seg))) <= {0, 1, 2, 3, 4}


def test_a_run_without_class_order_is_rematched_under_the_rule_it_asked_for(phantom_root,
                                                                              tmp_path):
    """Own maps of clusters cannot follow the rule; `evaluate --matching` can, and gives the
    figures of a run matched in the first place."""
    common = ("--model", "em-gmm", "--patients", "101", "102", "--crop", "64", "--no-figures",
              "--no-progress")
    _run("em", phantom_root, "--out", tmp_path / "matched", "--matching", "hungarian", *common)
    _run("em", phantom_root, "--out", tmp_path / "clusters", "--matching", "none", *common)
    clusters = json.loads((tmp_path / "clusters" / "summary.json").read_text())
    assert clusters["anatomy"] == "lv-dice" and clusters["anatomy_own_maps"] == "none"
    res = CliRunner().invoke(app, ["evaluate", str(phantom_root), "--out",
                                   str(tmp_path / "clusters"), "--matching", "hungarian"])
    assert res.exit_code == 0, res.output
    again = json.loads((tmp_path / "clusters" / "evaluation.json").read_text())["dice"]
    matched = json.loads((tmp_path / "matched" / "summary.json").read_text())["dice"]
    for name, value in matched.items():
        assert again[name] == pytest.approx(value, abs=1e-9), name


def test_an_explicit_rule_without_class_order_warns(phantom_root, tmp_path):
    common = ["em", phantom_root, "--model", "em-svgmm", "--patients", "101", "--crop", "64",
              "--matching", "none", "--no-figures", "--no-progress"]
    res = CliRunner().invoke(app, [str(a) for a in [*common, "--out", tmp_path / "a",
                                                    "--anatomy", "lv"]])
    assert res.exit_code == 0, res.output
    assert "--anatomy lv applies where the class order is known" in res.output
    res = CliRunner().invoke(app, [str(a) for a in [*common, "--out", tmp_path / "b"]])
    assert res.exit_code == 0 and "applies where the class order" not in res.output
