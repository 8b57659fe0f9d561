"""``--roi auto`` end to end: a labels-free folder segmented inside the ROI a network found."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from deepgmm.cli import app

runner = CliRunner()


@pytest.fixture
def unlabelled(phantom_root: Path, tmp_path: Path) -> Path:
    data = tmp_path / "unlabelled"
    shutil.copytree(phantom_root / "train25", data / "test20")
    return data


def test_em_with_roi_auto_on_a_labels_free_folder(learnt_run: Path, unlabelled: Path,
                                                  phantom_volumes, tmp_path: Path):
    out = tmp_path / "em"
    result = runner.invoke(app, [
        "em", str(unlabelled), "--out", str(out), "--model", "em-gmm", "--roi", "auto",
        "--roi-run", str(learnt_run), "--selection", "roi", "--matching", "none",
        "--crop", "96", "--patients", "101", "--no-figures", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "Dice will not be computed" in result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["roi"] == "auto" and summary["roi_path"] == str(learnt_run)
    assert summary["roi_skipped"] == []
    with (out / "results.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert rows and {r["roi"] for r in rows} == {"auto"}
    assert {r["case"] for r in rows} == {"101"}
    seg = np.asarray(nib.load(str(out / "101_seg.nii.gz")).dataobj)
    truth = phantom_volumes[0].roi
    assert seg.shape == truth.shape
    # the segmented region is the ROI the network found: most of it lies in the true LV
    inside = seg > 0
    assert inside.any() and (inside & truth).sum() > 0.8 * inside.sum()
    # every slice with ROI was segmented (--selection roi)
    assert sorted(int(r["slice"]) for r in rows) == sorted(
        int(z) for z in np.flatnonzero(inside.any(axis=(0, 1))))


def test_a_labels_free_folder_needs_an_roi_source(unlabelled: Path, tmp_path: Path):
    result = runner.invoke(app, ["em", str(unlabelled), "--out", str(tmp_path / "o"),
                                 "--selection", "roi", "--matching", "none"])
    assert result.exit_code == 2
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "have no ground truth" in lines[0] and "--roi 'auto' with an --roi-run" in lines[0]
    result = runner.invoke(app, ["em", str(unlabelled), "--out", str(tmp_path / "o"),
                                 "--roi", "auto"])
    assert result.exit_code == 2 and "--roi 'auto' needs --roi-run" in result.stderr
    assert not (tmp_path / "o").exists()
