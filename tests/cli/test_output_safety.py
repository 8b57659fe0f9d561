"""What the commands write and where: manifests, replacing earlier outputs, permissions,
and the unusual inputs that succeed with a warning (the refusals are in
``test_bad_input_matrix.py``)."""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from deepgmm.cli import app
from deepgmm.output_paths import MANIFEST, foreign_files, read_manifest

runner = CliRunner()
EM = ["--crop", "64", "--no-progress", "--no-figures", "--max-iter", "3"]
TRAIN = ["--crop", "64", "--depth", "2", "--base-filters", "4", "--epochs", "1",
         "--min-epochs", "1", "--device", "cpu", "--no-progress", "--no-augment"]


def _invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("safety") / "ph"
    result = _invoke("phantom", "--out", root, "--cases", "2", "--size", "64")
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _modes(root: Path) -> set[tuple[str, int]]:
    return {("dir" if p.is_dir() else "file", stat.S_IMODE(p.stat().st_mode))
            for p in [root, *root.rglob("*")]}


def test_an_earlier_output_is_replaced_and_said_so(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "em"
    first = _invoke("em", data, "--out", out, *EM)
    assert first.exit_code == 0, first.output
    assert "replaced" not in first.stderr
    listed = read_manifest(out)
    assert listed is not None and "summary.json" in listed and "101_seg.nii.gz" in listed
    assert foreign_files(out) == []
    # evaluate adds its files to the manifest, so the folder stays deepgmm's own
    assert _invoke("evaluate", data, "--out", out).exit_code == 0
    assert {"evaluation.csv", "evaluation.json"} <= read_manifest(out)
    second = _invoke("em", data, "--out", out, *EM)
    assert second.exit_code == 0, second.output
    assert f"warning: replaced the earlier output in {str(out)!r}" in second.stderr
    assert not (out / "evaluation.csv").exists()  # the new output holds only its own files
    assert not list(tmp_path.glob(".em.*"))  # no temporary or old folder left beside it


def test_a_users_file_survives_and_blocks_the_replacement(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "em"
    assert _invoke("em", data, "--out", out, *EM).exit_code == 0
    (out / "figures").mkdir(exist_ok=True)
    (out / "figures" / "mine.png").write_bytes(b"user")
    result = _invoke("em", data, "--out", out, *EM)
    assert result.exit_code == 2
    assert "figures/mine.png" in result.stderr
    assert (out / "figures" / "mine.png").read_bytes() == b"user"


def test_outputs_follow_the_umask(data: Path, tmp_path: Path, umask_022: None) -> None:
    out = tmp_path / "em"
    assert _invoke("em", data, "--out", out, *EM).exit_code == 0
    assert _modes(out) == {("dir", 0o755), ("file", 0o644)}
    mu = tmp_path / "mu.json"
    assert _invoke("mu-data", data, "--crop", "64", "--out", mu).exit_code == 0
    assert stat.S_IMODE(mu.stat().st_mode) == 0o644
    os.umask(0o027)
    ph = tmp_path / "ph"
    assert _invoke("phantom", "--out", ph, "--cases", "1", "--size", "64").exit_code == 0
    assert {m for kind, m in _modes(ph) if kind == "file"} == {0o640}


def test_summary_lists_figures_only_when_written(data: Path, tmp_path: Path) -> None:
    result = _invoke("em", data, "--out", tmp_path / "o", *EM)
    assert result.exit_code == 0
    line = next(ln for ln in result.stdout.splitlines() if ln.startswith("outputs:"))
    assert "figures/" not in line and "label tables)" in line


def test_max_iter_alone_lowers_the_default_minimum(data: Path, tmp_path: Path) -> None:
    result = _invoke("fit", data, "--out", tmp_path / "o", "--patients", "101", "--crop", "64",
                     "--no-progress", "--no-figures", "--model", "deepg", "--base-filters",
                     "4", "--depth", "2", "--max-iter", "5", "--device", "cpu")
    assert result.exit_code == 0, result.output
    rows = (tmp_path / "o" / "results.csv").read_text().splitlines()
    header = rows[0].split(",")
    iters = [int(r.split(",")[header.index("iterations")]) for r in rows[1:]]
    assert iters and max(iters) <= 5


def test_only_selected_cases_need_to_load(data: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    shutil.copytree(data, root)
    (root / "train25" / "phantom_training_101_T2.nii.gz").unlink()
    result = _invoke("em", root, "--patients", "102", "--out", tmp_path / "o", *EM)
    assert result.exit_code == 0, result.output
    assert {r.split(",")[0] for r in (tmp_path / "o" / "results.csv").read_text()
            .splitlines()[1:]} == {"102"}
    info = _invoke("info", root)
    assert info.exit_code == 2
    assert info.stdout.splitlines()[1].split()[0] == "102"  # the good case is described
    assert "not described: case 101: missing sequence T2" in info.stdout
    errors = [ln for ln in info.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(
        f"error: 1 case(s) below {str(root)!r} could not be read (the others are listed "
        "above): case 101: missing sequence T2: expected the file ")
    assert errors[0].endswith("phantom_training_101_T2.nii.gz'")


def test_resume_without_a_checkpoint_warns(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = _invoke("train", data, "--out", run, "--resume", *TRAIN)
    assert result.exit_code == 0, result.output
    assert f"warning: {str(run)!r} holds no checkpoint to resume; training starts afresh" \
        in result.stderr
    assert MANIFEST in {p.name for p in run.iterdir()}
    assert foreign_files(run) == []
    # an unfinished run predicts with a warning
    cfg = json.loads((run / "config.json").read_text())
    cfg["finished"] = False
    (run / "config.json").write_text(json.dumps(cfg))
    pred = _invoke("predict", run, data, "--out", tmp_path / "pred", "--no-progress",
                   "--no-figures", "--patients", "101")
    assert pred.exit_code == 0, pred.output
    assert "is unfinished (saved at epoch 1" in pred.stderr


def test_a_non_binary_roi_warns(data: Path, tmp_path: Path) -> None:
    gd = data / "train25_myops_gd" / "phantom_training_101_gd.nii.gz"
    img = nib.load(str(gd))
    codes = np.asarray(img.dataobj)
    roi = tmp_path / "roi.nii.gz"
    nib.save(nib.Nifti1Image((codes > 0).astype(np.int16) * 255, img.affine), str(roi))
    images = [arg for seq in ("C0", "DE", "T2") for arg in (
        "--image", f"{seq}={data / 'train25' / f'phantom_training_101_{seq}.nii.gz'}")]
    result = _invoke("segment", *images, "--roi", roi, "--out", tmp_path / "o", "--model",
                     "em-gmm", "--crop", "64", "--no-progress", "--no-figures",
                     "--max-iter", "3")
    assert result.exit_code == 0, result.output
    assert f"ROI mask {str(roi)!r} is not binary (values 0, 255)" in result.stderr
