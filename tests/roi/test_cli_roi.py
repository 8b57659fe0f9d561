"""``deepgmm roi train`` and ``deepgmm roi predict`` through the CLI, and their bad input."""

from __future__ import annotations

import json
import shutil
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
    assert "Traceback" not in result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for frag in fragments:
        assert frag in lines[0], (frag, lines[0])


TINY = ("--epochs", 1, "--spacing", 3.0, "--crop", 64, "--batch", 6, "--threads", 1,
        "--no-progress")


@pytest.fixture(scope="module")
def cli_run(phantom_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    before = torch.get_num_threads()
    run = tmp_path_factory.mktemp("cli") / "run"
    try:
        result = _run("roi", "train", phantom_root, "--out", run, "--patients", "101", "102",
                      *TINY)
    finally:
        torch.set_num_threads(before)
    assert result.exit_code == 0, result.output
    assert "trained on 6 slices of 2 patients (C0, DE, T2)" in result.stdout
    return run


@pytest.fixture
def unlabelled(phantom_root: Path, tmp_path: Path) -> Path:
    """The phantom's images in the MyoPS test20/ layout: no _gd files."""
    data = tmp_path / "unlabelled"
    shutil.copytree(phantom_root / "train25", data / "test20")
    return data


def test_train_writes_a_run(cli_run: Path):
    config = json.loads((cli_run / "config.json").read_text())
    assert config["train_patients"] == ["101", "102"]
    assert config["spacing_mm"] == 3.0 and config["crop"] == 64
    assert (cli_run / "model.safetensors").is_file()


def test_predict_on_a_folder_without_ground_truth(cli_run: Path, unlabelled: Path,
                                                  tmp_path: Path, monkeypatch):
    import deepgmm.roi.predict as predict

    # The 1-epoch network may find nothing; what is checked here is the writing.
    monkeypatch.setattr(predict, "predict_mask",
                        lambda model, image, zooms: np.pad(
                            np.ones((10, 10, image.shape[3]), dtype=bool),
                            ((50, image.shape[1] - 60), (50, image.shape[2] - 60), (0, 0))))
    out = tmp_path / "rois"
    result = _run("roi", "predict", cli_run, unlabelled, "--out", out, "--no-progress")
    assert result.exit_code == 0, result.output
    assert "4 of 4 case(s) written" in result.stdout
    names = sorted(p.name for p in out.iterdir())
    assert names == [".deepgmm-manifest.json", "101_roi.nii.gz", "102_roi.nii.gz",
                     "103_roi.nii.gz", "104_roi.nii.gz", "roi_summary.json"]
    written = nib.load(str(out / "103_roi.nii.gz"))
    source = nib.load(str(unlabelled / "test20" / "phantom_training_103_C0.nii.gz"))
    assert written.shape == source.shape
    np.testing.assert_allclose(written.affine, source.affine, atol=1e-6)
    assert int(np.asarray(written.dataobj).sum()) == 100 * source.shape[2]


def test_predict_with_the_real_network(cli_run: Path, phantom_root: Path, tmp_path: Path):
    out = tmp_path / "rois"
    result = _run("roi", "predict", cli_run, phantom_root, "--out", out, "--patients", "103",
                  "--no-progress")
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "roi_summary.json").read_text())
    assert [c["case_id"] for c in summary["cases"]] == ["103"]
    case = summary["cases"][0]
    assert (case["file"] is None) == (case["slices"] == [])
    assert summary["sequences"] == ["C0", "DE", "T2"]


def test_empty_prediction_warns_and_goes_on(cli_run: Path, phantom_root: Path,
                                            tmp_path: Path, monkeypatch):
    import deepgmm.roi.predict as predict

    calls: list[int] = []

    def empty_second(model, image, zooms):
        calls.append(1)
        return np.full(image.shape[1:], len(calls) != 2)

    monkeypatch.setattr(predict, "predict_mask", empty_second)
    result = _run("roi", "predict", cli_run, phantom_root, "--out", tmp_path / "o",
                  "--patients", "101", "102", "103", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "warning: case 102: no left ventricle found" in result.stderr
    assert "skipped: no left ventricle found" in result.stdout
    assert "2 of 3 case(s) written" in result.stdout and "skipped (no LV found): 102" in \
        result.stdout
    assert not (tmp_path / "o" / "102_roi.nii.gz").exists()
    assert (tmp_path / "o" / "103_roi.nii.gz").is_file()


def test_data_with_other_sequences(cli_run: Path, phantom_root: Path, tmp_path: Path):
    data = tmp_path / "data"
    shutil.copytree(phantom_root, data)
    for path in data.rglob("*_T2.nii.gz"):
        path.rename(path.with_name(path.name.replace("_T2", "_FLAIR")))
    result = _run("roi", "predict", cli_run, data, "--out", tmp_path / "o", "--no-progress")
    _assert_user_error(result, "was trained on the sequences C0, DE, T2",
                       "has C0, DE, FLAIR", str(data))
    assert not (tmp_path / "o").exists()


def test_bad_runs_and_folders(cli_run: Path, phantom_root: Path, unlabelled: Path,
                              tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    _assert_user_error(_run("roi", "predict", empty, phantom_root, "--out", tmp_path / "o"),
                       "holds no ROI run", "deepgmm roi train")
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"format_version": 1}))
    _assert_user_error(_run("roi", "predict", other, phantom_root, "--out", tmp_path / "o"),
                       "is not an ROI run")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    _assert_user_error(_run("roi", "predict", cli_run, phantom_root, "--out", foreign),
                       "is not an earlier `deepgmm roi predict` output")
    assert (foreign / "notes.txt").read_text() == "keep me"
    _assert_user_error(_run("roi", "predict", cli_run, phantom_root, "--out", tmp_path / "o",
                            "--patients", "999"), "unknown patient id(s) 999")
    # training needs ground truth
    _assert_user_error(_run("roi", "train", unlabelled, "--out", tmp_path / "r", *TINY),
                       "have no ground truth", "101")
    assert not (tmp_path / "r").exists()
    _assert_user_error(_run("roi", "train", phantom_root, "--out", tmp_path / "r",
                            "--crop", 100, "--no-progress"), "crop 100 must be divisible")
    _assert_user_error(_run("roi", "train", phantom_root, "--out", foreign,
                            "--no-progress"), "holds other files")
