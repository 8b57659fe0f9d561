"""The segmenting commands through the CLI: em, segment, and their bad input."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from deepgmm.cli import app

runner = CliRunner()


def _run(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def _assert_user_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for frag in fragments:
        assert frag in lines[0], (frag, lines[0])


def test_em_on_phantom_writes_outputs_and_recovers_classes(phantom_root: Path,
                                                            tmp_path: Path) -> None:
    out = tmp_path / "em"
    # the clusters as EM found them (--recipe published: each pixel's most likely class);
    # the anatomy rule of the default recipe is tested in test_anatomy*.py
    result = _run("em", phantom_root, "--model", "em-gmm", "--patients", "101", "102",
                  "--crop", "64", "--no-progress", "--no-figures", "--out", out,
                  "--recipe", "published")
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "em-gmm"
    assert summary["anatomy"] == "none"
    assert summary["matching"] == "hungarian"
    assert summary["n_slices"] == 6  # 3 all-class slices in each of the 2 cases
    # The phantom's blood, myocardium and scar have distinct contrasts: EM finds them.
    for name in ("blood", "myocardium", "scar"):
        assert summary["dice"][name] > 0.8, summary["dice"]
    assert sorted(p.name for p in out.glob("*_seg.nii.gz")) == ["101_seg.nii.gz",
                                                                  "102_seg.nii.gz"]
    seg = nib.load(out / "101_seg_matched.nii.gz")  # relabelled by the Hungarian oracle
    src = nib.load(next(phantom_root.rglob("*_101_C0.nii.gz")))
    np.testing.assert_allclose(seg.affine, src.affine)
    assert seg.shape == src.shape
    assert set(np.unique(np.asarray(seg.dataobj))) <= {0, 200, 500, 1220, 2221}
    own = nib.load(out / "101_seg.nii.gz")  # the clusters as fitted, no class identity
    assert own.shape == src.shape and set(np.unique(np.asarray(own.dataobj))) <= {0, 1, 2, 3, 4}
    assert summary["maps"]["<case>_seg_matched.nii.gz"]["labels"] == "hungarian"
    assert "blood" in result.output and "dice" in result.output


def test_patients_accepts_commas_and_repeats(phantom_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "em"
    result = _run("em", phantom_root, "--patients", "101,103", "--crop", "64",
                  "--no-progress", "--no-figures", "--max-iter", "3", "--out", out)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.glob("*_seg.nii.gz")) == ["101_seg.nii.gz",
                                                                  "103_seg.nii.gz"]


def test_segment_any_sequences_without_ground_truth(phantom_root: Path,
                                                     tmp_path: Path) -> None:
    """Two sequences under other names, an ROI mask, no labels: matching defaults to none."""
    gt_file = next(phantom_root.rglob("*_102_gd.nii.gz"))
    gt = nib.load(gt_file)
    roi = nib.Nifti1Image((np.isin(np.asarray(gt.dataobj), [200, 500, 1220, 2221]))
                          .astype(np.uint8), gt.affine)
    nib.save(roi, tmp_path / "roi.nii.gz")
    out = tmp_path / "seg"
    result = _run("segment", "--image", f"bright={next(phantom_root.rglob('*_102_C0.*'))}",
                  "--image", f"late={next(phantom_root.rglob('*_102_DE.*'))}",
                  "--roi", tmp_path / "roi.nii.gz", "--model", "em-svgmm", "--crop", "64",
                  "--no-progress", "--no-figures", "--out", out)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["matching"] == "none"
    assert summary["n_slices"] == 3
    seg = np.asarray(nib.load(out / "case_seg.nii.gz").dataobj)
    inside = np.asarray(roi.dataobj).astype(bool)
    assert (seg[~inside] == 0).all() and (seg[inside] > 0).all()


@pytest.mark.parametrize(("args", "fragment"), [
    (["--model", "kmeans"], "--model"),
    (["--matching", "best"], "--matching"),
    (["--device", "tpu"], "--device"),
    (["--patients", "999"], "999"),
])
def test_em_bad_options(phantom_root: Path, tmp_path: Path, args: list[str],
                        fragment: str) -> None:
    out = tmp_path / "out"
    result = _run("em", phantom_root, *args, "--crop", "64", "--no-progress", "--out", out)
    _assert_user_error(result, fragment)
    assert not out.exists()


def test_segment_bad_image_option(tmp_path: Path) -> None:
    roi = tmp_path / "roi.nii.gz"
    result = _run("segment", "--image", "no-equals-sign.nii.gz", "--roi", roi,
                  "--out", tmp_path / "out")
    _assert_user_error(result, "NAME=FILE")


def test_matching_without_ground_truth_is_refused(phantom_root: Path,
                                                   tmp_path: Path) -> None:
    c0 = next(phantom_root.rglob("*_101_C0.*"))
    gt = next(phantom_root.rglob("*_101_gd.*"))
    result = _run("segment", "--image", f"C0={c0}", "--roi", gt, "--matching", "greedy",
                  "--model", "em-gmm", "--out", tmp_path / "out")
    _assert_user_error(result, "ground truth")
    assert not (tmp_path / "out").exists()


def test_fit_lam_needs_mu_data(phantom_root: Path, tmp_path: Path) -> None:
    result = _run("fit", phantom_root, "--lam", "1", "--out", tmp_path / "out")
    _assert_user_error(result, "--mu-data")


def test_fit_on_phantom_with_mu_data_needs_no_matching(phantom_root: Path,
                                                       tmp_path: Path) -> None:
    """deepSVG with the μ_data penalty: class order fixed, outputs complete."""
    mu = tmp_path / "mu.json"
    assert _run("mu-data", phantom_root, "--patients", "102", "103", "--crop", "64",
                "--out", mu).exit_code == 0
    out = tmp_path / "fit"
    result = _run("fit", phantom_root, "--model", "deepsvg", "--patients", "101",
                  "--lam", "1", "--mu-data", mu, "--matching", "none", "--crop", "64",
                  "--base-filters", "8", "--depth", "2", "--lr", "1e-2", "--max-iter", "40",
                  "--no-progress", "--out", out)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "deepsvg" and summary["matching"] == "none"
    assert summary["n_slices"] == 3
    # Without matching, a wrong class order would leave some class near Dice 0: with the
    # penalty every class lands on its own channel.
    assert min(summary["dice"].values()) > 0.5, summary
    assert len(list((out / "figures").glob("*.png"))) == 3
    rows = (out / "results.csv").read_text().splitlines()
    assert len(rows) == 4 and rows[0].startswith("case,slice,method")


def test_fit_unknown_precision_is_one_line(phantom_root: Path, tmp_path: Path) -> None:
    result = _run("fit", phantom_root, "--precision", "half", "--out", tmp_path / "out")
    _assert_user_error(result, "--precision", "'fp32', 'bf16'", "'half'")
    assert not (tmp_path / "out").exists()
