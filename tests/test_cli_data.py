"""The data commands through the CLI: phantom, info, mu-data, demo, and bad input."""

from __future__ import annotations

import gzip
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from deepgmm.cli import app
from deepgmm.commands.data import run_demo
from deepgmm.data.dataset import load_dataset
from deepgmm.data.mu_data import compute_mu_data, load_mu_data
from deepgmm.data.slices import make_batch

runner = CliRunner()


def _run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def _assert_user_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for frag in fragments:
        assert frag in lines[0], (frag, lines[0])


@pytest.fixture
def damaged(phantom_root: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "data"
    shutil.copytree(phantom_root, dest)
    return dest


def _img(root: Path, seq: str, case: str = "102") -> Path:
    return root / "train25" / f"phantom_training_{case}_{seq}.nii.gz"


def _gd(root: Path, case: str = "102") -> Path:
    return root / "train25_myops_gd" / f"phantom_training_{case}_gd.nii.gz"


def _replace(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> None:
    img = nib.load(str(path))
    nib.save(nib.Nifti1Image(data, img.affine if affine is None else affine), str(path))


def _gd_codes(root: Path) -> np.ndarray:
    return np.asarray(nib.load(str(_gd(root))).dataobj).copy()


def test_help_texts():
    for cmd in ("phantom", "info", "mu-data", "demo"):
        result = _run(cmd, "--help")
        assert result.exit_code == 0 and "Usage" in result.output


def test_phantom_command(tmp_path: Path):
    result = _run("phantom", "--out", tmp_path / "ph", "--cases", "2", "--seed", "5")
    assert result.exit_code == 0, result.output
    assert "wrote 2 phantom case(s)" in result.output
    assert len(list((tmp_path / "ph").rglob("*.nii.gz"))) == 8
    _assert_user_error(_run("phantom", "--out", tmp_path / "bad", "--cases", "0"),
                       "at least one case")
    _assert_user_error(_run("phantom", "--out", tmp_path / "bad", "--size", "16"), "at least 48")
    assert not (tmp_path / "bad").exists()


def test_info_on_phantom(phantom_root: Path):
    result = _run("info", phantom_root)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert [ln.split()[0] for ln in lines[1:5]] == ["101", "102", "103", "104"]
    assert "128 x 128 x 3" in lines[1] and "1.500 x 1.500 x 10.000" in lines[1]
    assert "background blood myocardium edema scar" in lines[1]
    assert lines[-1] == ("4 patients, 12 slices; with ground truth: 4 patients, 12 slices "
                         "with ROI, 12 all-class slices")
    result = _run("info", phantom_root, "--patients", "103", "101")
    assert result.exit_code == 0 and result.output.splitlines()[-1].startswith("2 patients")


def test_info_without_ground_truth(damaged: Path):
    shutil.rmtree(damaged / "train25_myops_gd")
    result = _run("info", damaged)
    assert result.exit_code == 0, result.output
    assert "no ground truth" in result.output
    assert result.output.splitlines()[-1] == "4 patients, 12 slices"


DamageFn = Callable[[Path], None]


def _missing_sequence(root: Path) -> None:
    _img(root, "T2").unlink()


def _missing_gd(root: Path) -> None:
    _gd(root).unlink()


def _other_shape(root: Path) -> None:
    _replace(_img(root, "DE"), np.zeros((128, 100, 3), np.int16))


def _other_affine(root: Path) -> None:
    aff = nib.load(str(_img(root, "DE"))).affine.copy()
    aff[0, 3] += 3.0
    _replace(_img(root, "DE"), np.asarray(nib.load(str(_img(root, "DE"))).dataobj), aff)


def _four_d(root: Path) -> None:
    _replace(_img(root, "C0"), np.zeros((128, 128, 3, 2), np.int16))


def _not_nifti(root: Path) -> None:
    with gzip.open(_img(root, "C0"), "wb") as f:
        f.write(b"plain text, not an image\n" * 40)


def _corrupt_gzip(root: Path) -> None:
    path = _img(root, "C0")
    path.write_bytes(path.read_bytes()[:300])


def _nan_voxels(root: Path) -> None:
    data = np.asarray(nib.load(str(_img(root, "T2"))).dataobj).astype(np.float32)
    data[5, 5, 1] = np.nan
    _replace(_img(root, "T2"), data)


def _unknown_codes(root: Path) -> None:
    codes = _gd_codes(root)
    codes[0, 0, 0] = 42
    _replace(_gd(root), codes)


def _empty_roi(root: Path) -> None:
    _replace(_gd(root), np.zeros_like(_gd_codes(root)))


BAD_INPUT: list[tuple[str, DamageFn, tuple[str, ...]]] = [
    ("missing sequence", _missing_sequence,
     ("case 102: missing sequence T2", "phantom_training_102_T2.nii.gz")),
    ("missing ground truth", _missing_gd,
     ("case 102: missing ground-truth file", "phantom_training_102_gd.nii.gz")),
    ("different shape", _other_shape, ("_102_DE.nii.gz", "(128, 100, 3)", "_102_C0.nii.gz")),
    ("different affine", _other_affine, ("_102_DE.nii.gz", "not in the same space", "origin")),
    ("4-D", _four_d, ("_102_C0.nii.gz", "expected a 3-D volume")),
    ("not NIfTI", _not_nifti, ("_102_C0.nii.gz", "could not be read")),
    ("corrupt gzip", _corrupt_gzip, ("_102_C0.nii.gz", "could not be read")),
    ("NaN voxels", _nan_voxels, ("_102_T2.nii.gz", "NaN or infinite")),
    ("unknown label codes", _unknown_codes, ("_102_gd.nii.gz", "code(s) 42 ")),
    ("empty ROI", _empty_roi, ("_102_gd.nii.gz", "region of interest is empty")),
]


@pytest.mark.parametrize(("damage", "fragments"), [b[1:] for b in BAD_INPUT],
                         ids=[b[0] for b in BAD_INPUT])
def test_bad_input_is_one_clear_line(damaged: Path, tmp_path: Path, damage, fragments):
    damage(damaged)
    _assert_user_error(_run("info", damaged), *fragments)
    out = tmp_path / "mu.json"
    _assert_user_error(_run("mu-data", damaged, "--out", out, "--crop", "64"), *fragments)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["data"]  # no temporary leftovers


def test_unknown_patient(phantom_root: Path, tmp_path: Path):
    out = tmp_path / "mu.json"
    _assert_user_error(_run("mu-data", phantom_root, "--patients", "101", "999", "--out", out),
                       "unknown patient id(s) 999", "available: 101, 102, 103, 104")
    _assert_user_error(_run("info", phantom_root, "--patients", "7"), "unknown patient id(s) 7")
    assert not out.exists()


def test_mu_data_command(phantom_root: Path, phantom_volumes, tmp_path: Path):
    out = tmp_path / "mu.json"
    result = _run("mu-data", phantom_root, "--patients", "101,102", "103", "--n-slices", "4",
                  "--seed", "3", "--crop", "64", "--out", out)
    assert result.exit_code == 0, result.output
    assert "μ_data from 4 of 9 slices (3 patients), seed 3" in result.output
    batch = make_batch(phantom_volumes[:3], crop_size=(64, 64))
    np.testing.assert_allclose(load_mu_data(out, ["C0", "DE", "T2"]),
                               compute_mu_data(batch, n_slices=4, seed=3), rtol=1e-9)
    assert json.loads(out.read_text())["sequences"] == ["C0", "DE", "T2"]
    excl = tmp_path / "excl.json"
    result = _run("mu-data", phantom_root, "--exclude", "104", "--n-slices", "4", "--seed",
                  "3", "--crop", "64", "--out", excl)
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(load_mu_data(excl), load_mu_data(out))
    # several ids after one --exclude leave all of them out: only 101 and 102 remain
    two = tmp_path / "two.json"
    result = _run("mu-data", phantom_root, "--exclude", "103", "104", "--n-slices", "4",
                  "--seed", "3", "--crop", "64", "--out", two)
    assert result.exit_code == 0, result.output
    assert "(2 patients)" in result.output
    np.testing.assert_allclose(load_mu_data(two), compute_mu_data(
        make_batch(phantom_volumes[:2], crop_size=(64, 64)), n_slices=4, seed=3), rtol=1e-9)
    # with --patients as well, loose ids are ambiguous: refused, nothing written
    amb = tmp_path / "amb.json"
    _assert_user_error(_run("mu-data", phantom_root, "--patients", "101", "--exclude", "103",
                            "104", "--out", amb), "comma list")
    assert not amb.exists()


@pytest.mark.parametrize(("args", "fragment"), [
    (("--crop", "0"), "crop size must be two positive integers"),
    (("--crop", "-5"), "crop size must be two positive integers"),
    (("--crop", "300"), "more than 2 times"),
    (("--crop", "16"), "lie outside the 16 x 16 crop"),
    (("--n-slices", "0"), "at least 1"),
    (("--selection", "some"), "must be one of all-classes, roi"),
    (("--normalisation", "max"), "must be one of crop, roi"),
])
def test_mu_data_bad_options(phantom_root: Path, tmp_path: Path, args, fragment):
    out = tmp_path / "mu.json"
    _assert_user_error(_run("mu-data", phantom_root, "--out", out, *args), fragment)
    assert not out.exists()


def test_missing_root(tmp_path: Path):
    _assert_user_error(_run("info", tmp_path / "none"), "does not exist")
    _assert_user_error(_run("info", tmp_path), "no MyoPS-style images")


def test_demo(tmp_path: Path):
    summary = run_demo(tmp_path / "d1", n_cases=4, epochs=2, progress=False)
    assert summary["train_cases"] == ["101", "102"] and summary["test_cases"] == ["103", "104"]
    assert summary["train_slices"] == 6 and summary["slices"] == 6
    assert summary["batch_shape"] == (6, 3, 64, 64)
    assert sum(summary["class_fractions"].values()) == pytest.approx(1.0)
    assert summary["training"]["epochs"] == 2
    assert set(summary["summaries"]) == {"em-svgmm", "deepsvg"}
    for method, s in summary["summaries"].items():
        assert s["method"] == method and s["n_slices"] == 6
        assert (tmp_path / "d1" / method / "report.html").is_file()
        assert len(list((tmp_path / "d1" / method / "figures").glob("*.png"))) == 6
    assert summary["summaries"]["em-svgmm"]["matching"] == "hungarian"
    assert summary["summaries"]["deepsvg"]["matching"] == "none"
    assert (tmp_path / "d1" / "deepsvg-train" / "model.safetensors").is_file()
    assert (tmp_path / "d1" / "deepsvg-train" / "report.html").is_file()
    # μ_data: the means of the labelled training slices, in the class order of the table.
    mu = summary["mu_data"]
    assert mu[3, 1] == mu[:, 1].max() and mu[2, 2] == mu[:, 2].max()  # scar DE, edema T2
    # Even on the noisy demo phantom EM-SVGMM finds the two large classes.
    em = summary["summaries"]["em-svgmm"]["dice"]
    assert min(em["blood"], em["myocardium"]) > 0.85, em
    # A second run into the same folder replaces the outputs, training folder included.
    result = _run("demo", "--out", tmp_path / "d1", "--epochs", "1", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "phantom: 8 cases, 3 sequences (C0, DE, T2), 64 x 64 crops" in result.output
    assert "held-out cases 107, 108" in result.output and "1 epochs" in result.output
    assert "em-svgmm" in result.output and "deepsvg" in result.output
    assert load_dataset(tmp_path / "d1" / "phantom")[0].image.shape == (3, 128, 128, 3)
    assert not [p.name for p in (tmp_path / "d1").iterdir() if p.name.startswith(".")]


def test_demo_needs_cases_to_train_on(tmp_path: Path):
    from deepgmm.errors import InputError

    with pytest.raises(InputError, match="more than 2 cases"):
        run_demo(tmp_path / "d", n_cases=2, progress=False)
    assert not (tmp_path / "d").exists()


@pytest.mark.myops
def test_info_on_myops(myops_root: Path):
    result = _run("info", myops_root)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == ("25 patients, 102 slices; with ground truth: "
                                              "25 patients, 102 slices with ROI, 79 all-class "
                                              "slices")
