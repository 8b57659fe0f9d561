"""``--roi`` / ``--roi-run`` on ``segment`` and ``evaluate``, and the ROI bad-input cases of
the segmenting commands through the command line."""

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
from deepgmm.data.nifti import save_nifti

runner = CliRunner()


def _files(root: Path, case: str) -> dict[str, Path]:
    return {name: next(root.rglob(f"*_{case}_{name}.nii.gz")) for name in ("C0", "DE", "T2",
                                                                           "gd")}


def _images(files: dict[str, Path], names=("C0", "DE", "T2")) -> list[str]:
    return [a for n in names for a in ("--image", f"{n}={files[n]}")]


def _one_error_line(result, *fragments: str) -> str:
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.fixture
def empty_second_prediction(monkeypatch):
    """The ROI network finds the true LV of every case but the second one it is asked about."""
    import deepgmm.roi.predict as predict

    real = predict.predict_mask
    calls: list[int] = []

    def fake(model, image, zooms):
        calls.append(1)
        mask = real(model, image, zooms)
        return mask if len(calls) != 2 else np.zeros_like(mask)

    monkeypatch.setattr(predict, "predict_mask", fake)
    return calls


SEGMENT = ["--model", "em-gmm", "--crop", "96", "--no-figures", "--no-progress"]


def test_segment_roi_auto_finds_the_lv(learnt_run: Path, phantom_root: Path, phantom_volumes,
                                       tmp_path: Path):
    files = _files(phantom_root, "101")
    out = tmp_path / "seg"
    # the images in another order than the run's: they are matched by name
    result = runner.invoke(app, ["segment", *_images(files, ("T2", "C0", "DE")), "--roi",
                                 "auto", "--roi-run", str(learnt_run), "--out", str(out),
                                 *SEGMENT])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["roi"] == "auto" and summary["roi_path"] == str(learnt_run)
    assert summary["matching"] == "none"
    with (out / "results.csv").open() as fh:
        assert {r["roi"] for r in csv.DictReader(fh)} == {"auto"}
    inside = np.asarray(nib.load(str(out / "case_seg.nii.gz")).dataobj) > 0
    truth = phantom_volumes[0].roi
    assert inside.any() and (inside & truth).sum() > 0.8 * inside.sum()


def test_segment_roi_gt_is_the_lv_of_the_ground_truth(phantom_root: Path, phantom_volumes,
                                                      tmp_path: Path):
    files = _files(phantom_root, "101")
    out = tmp_path / "seg"
    result = runner.invoke(app, ["segment", *_images(files), "--gt", str(files["gd"]),
                                 "--out", str(out), *SEGMENT])  # --roi gt is the default
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["roi"] == "gt" and summary["roi_path"] == str(files["gd"])
    seg = np.asarray(nib.load(str(out / "case_seg.nii.gz")).dataobj)
    # em-gmm labels every ROI pixel of every selected slice, and nothing else
    np.testing.assert_array_equal(seg > 0, phantom_volumes[0].roi)


def test_segment_roi_bad_input(tiny_run: Path, phantom_root: Path, tmp_path: Path):
    files = _files(phantom_root, "101")
    out = tmp_path / "seg"
    _one_error_line(runner.invoke(app, ["segment", *_images(files), "--out", str(out)]),
                    "--roi 'gt'", "--gt")
    _one_error_line(runner.invoke(app, ["segment", *_images(files), "--roi", "auto",
                                        "--out", str(out)]), "--roi 'auto' needs --roi-run")
    _one_error_line(runner.invoke(app, ["segment", *_images(files), "--roi",
                                        str(files["gd"]), "--roi-run", str(tiny_run),
                                        "--out", str(out)]), "--roi-run applies to")
    _one_error_line(runner.invoke(app, ["segment", *_images(files), "--roi",
                                        str(tmp_path / "none.nii.gz"), "--out", str(out)]),
                    "none.nii.gz", "is not a file")
    # an ROI run trained on other sequences than the images: naming both
    line = _one_error_line(runner.invoke(app, [
        "segment", "--image", f"bright={files['C0']}", "--image", f"late={files['DE']}",
        "--roi", "auto", "--roi-run", str(tiny_run), "--out", str(out)]))
    assert "C0, DE, T2" in line and "bright, late" in line
    # a mask on another grid than the images
    ref = nib.load(str(files["C0"]))
    moved = ref.affine.copy()
    moved[1, 3] += 4.0
    save_nifti(np.ones(ref.shape, dtype=np.uint8), moved, tmp_path / "moved_roi.nii.gz")
    _one_error_line(runner.invoke(app, ["segment", *_images(files), "--roi",
                                        str(tmp_path / "moved_roi.nii.gz"), "--out",
                                        str(out)]), "moved_roi.nii.gz", "not in the same space")
    assert not out.exists()


def test_segment_roi_auto_that_finds_nothing(tiny_run: Path, phantom_root: Path,
                                             tmp_path: Path, monkeypatch):
    import deepgmm.roi.predict as predict

    monkeypatch.setattr(predict, "predict_mask",
                        lambda model, image, zooms: np.zeros(image.shape[1:], dtype=bool))
    files = _files(phantom_root, "101")
    out = tmp_path / "seg"
    _one_error_line(runner.invoke(app, ["segment", *_images(files), "--roi", "auto",
                                        "--roi-run", str(tiny_run), "--out", str(out)]),
                    "case case:", "found no left ventricle")
    assert not out.exists()


def test_em_skips_a_case_without_roi_and_goes_on(learnt_run: Path, phantom_root: Path,
                                                 tmp_path: Path, empty_second_prediction):
    out = tmp_path / "em"
    result = runner.invoke(app, ["em", str(phantom_root), "--out", str(out), "--roi", "auto",
                                 "--roi-run", str(learnt_run), "--selection", "roi",
                                 "--patients", "101", "102", "103", *SEGMENT])
    assert result.exit_code == 0, result.output
    assert "case 102: no left ventricle found; case skipped" in result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["roi_skipped"] == ["102"]
    assert sorted(p.name for p in out.glob("*_seg.nii.gz")) == ["101_seg.nii.gz",
                                                                  "103_seg.nii.gz"]


def test_em_roi_run_on_other_sequences_and_masks_on_another_grid(tiny_run: Path,
                                                                 phantom_root: Path,
                                                                 tmp_path: Path):
    data = tmp_path / "d"
    shutil.copytree(phantom_root, data)
    for path in data.rglob("*_T2.nii.gz"):
        path.unlink()
    out = tmp_path / "em"
    line = _one_error_line(runner.invoke(app, ["em", str(data), "--out", str(out), "--roi",
                                               "auto", "--roi-run", str(tiny_run)]))
    assert "C0, DE, T2" in line and "C0, DE" in line.split("has", 1)[1]
    folder = tmp_path / "rois"
    ref = nib.load(str(_files(phantom_root, "101")["C0"]))
    save_nifti(np.ones(ref.shape[:2] + (ref.shape[2] + 1,), dtype=np.uint8), ref.affine,
               folder / "101_roi.nii.gz")
    _one_error_line(runner.invoke(app, ["em", str(phantom_root), "--out", str(out), "--roi",
                                        str(folder), "--patients", "101"]), "101_roi.nii.gz")
    assert not out.exists()


def test_evaluate_with_roi_scores_the_slices_not_segmented(phantom_root: Path,
                                                           phantom_volumes, tmp_path: Path):
    """A run whose ROI missed slice 2 of case 101: evaluate --roi gt scores it as background
    (Dice 0 for every class the ground truth has there); without --roi it is not scored."""
    case = phantom_volumes[0]
    assert case.case_id == "101" and case.labels is not None
    mask = case.roi.copy()
    mask[:, :, 2] = False
    folder = tmp_path / "rois"
    save_nifti(mask.astype(np.uint8), case.affine, folder / "101_roi.nii.gz")
    out = tmp_path / "em"
    result = runner.invoke(app, ["em", str(phantom_root), "--out", str(out), "--roi",
                                 str(folder), "--selection", "roi", "--patients", "101",
                                 *SEGMENT])
    assert result.exit_code == 0, result.output
    plain = runner.invoke(app, ["evaluate", str(phantom_root), "--out", str(out)])
    assert plain.exit_code == 0, plain.output
    assert json.loads((out / "evaluation.json").read_text())["n_slices"] == 2
    result = runner.invoke(app, ["evaluate", str(phantom_root), "--out", str(out), "--roi",
                                 "gt"])
    assert result.exit_code == 0, result.output
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert evaluation["n_slices"] == 3 and evaluation["n_slices_not_segmented"] == 1
    assert evaluation["roi"]["roi"] == "gt"
    with (out / "evaluation.csv").open() as fh:
        rows = {int(r["slice"]): r for r in csv.DictReader(fh)}
    present = [k for k in range(1, 5) if (case.labels[:, :, 2] == k).any()]
    assert present
    names = ("blood", "myocardium", "edema", "scar")
    for k in present:
        column = next(c for c in rows[2] if c.startswith("dice") and names[k - 1] in c)
        assert float(rows[2][column]) == 0.0
    _one_error_line(runner.invoke(app, ["evaluate", str(phantom_root), "--out", str(out),
                                        "--roi", "auto"]), "--roi 'auto' needs --roi-run")


def test_segment_as_a_per_case_job_needs_a_mask_file(phantom_root: Path, tmp_path: Path):
    """--resume runs segment as a per-case job, which takes --roi as a mask file only."""
    files = _files(phantom_root, "101")
    out = tmp_path / "out"
    _one_error_line(runner.invoke(app, ["segment", *_images(files), "--gt", str(files["gd"]),
                                        "--roi", "gt", "--resume", *SEGMENT,
                                        "--out", str(out)]), "--roi", "mask file")
    assert not out.exists()
