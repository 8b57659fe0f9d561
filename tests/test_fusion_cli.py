"""`deepgmm predict` fuses the network's probabilities with the run's labelled class
Gaussians by default; `--fusion none` and `--recipe published` give the network's own."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from deepgmm.cli import app
from deepgmm.data.dataset import load_dataset
from deepgmm.data.slices import make_batch
from deepgmm.mixture.fusion import ClassGaussians, fuse_probabilities

TINY = ["--crop", "64", "--depth", "2", "--base-filters", "4", "--epochs", "1",
        "--min-epochs", "1", "--device", "cpu", "--no-progress", "--train-patients", "101",
        "103"]


def _run(*args) -> None:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def run(phantom_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("fusion") / "run"
    _run("train", phantom_root, "--out", folder, "--seed", "0", *TINY)
    return folder


def _predict(root: Path, run: Path, out: Path, *extra) -> tuple[np.ndarray, dict]:
    _run("predict", run, root, "--out", out, "--patients", "102", "--no-figures",
         "--no-progress", "--device", "cpu", *extra)
    prob = np.asanyarray(nib.load(str(out / "102_prob.nii.gz")).dataobj)
    return prob, json.loads((out / "run.json").read_text())


def test_predict_fuses_by_default_and_published_does_not(phantom_root, run, tmp_path):
    fused, record = _predict(phantom_root, run, tmp_path / "default")
    plain, record_none = _predict(phantom_root, run, tmp_path / "none", "--fusion", "none")
    published, record_pub = _predict(phantom_root, run, tmp_path / "pub", "--recipe",
                                     "published")
    assert record["resolved"]["fusion"] == "labelled"
    assert record_none["resolved"]["fusion"] == "none"
    assert record_pub["resolved"]["fusion"] == "none"
    maps = {d: json.loads((tmp_path / d / "summary.json").read_text())["maps"]
            for d in ("default", "pub")}
    assert maps["default"]["<case>_prob.nii.gz"]["labels"] == (
        "fused with labelled class Gaussians")
    assert maps["default"]["<case>_seg.nii.gz"]["labels"] == "anatomy rule lv-dice"
    assert maps["pub"]["<case>_prob.nii.gz"]["labels"] == "as fitted"
    assert maps["pub"]["<case>_seg.nii.gz"]["labels"] == "as fitted"
    report = (tmp_path / "default" / "report.html").read_text()
    assert "<code>&lt;case&gt;_prob.nii.gz</code>\nfused with labelled class Gaussians" in report
    assert "anatomy rule lv" in report
    np.testing.assert_array_equal(published, plain)
    assert not np.allclose(fused, plain, atol=1e-3)
    # the default's map is the fusion of the network's probabilities with the run's class
    # Gaussians: recompute it from the written network map, on each slice's crop
    config = json.loads((run / "config.json").read_text())
    gaussians = ClassGaussians.from_dict(config["class_gaussians"], 4, 3)
    batch = make_batch(load_dataset(phantom_root, ["102"]), crop_size=(64, 64),
                       normalisation=config["normalisation"])  # as predict prepares them
    for b, z in enumerate(batch.slice_indices):
        x0, y0 = (int(v) for v in batch.crop_origins[b])
        crop = (slice(x0, x0 + 64), slice(y0, y0 + 64), int(z))
        net = torch.as_tensor(plain[crop].transpose(2, 0, 1)[None].copy())  # (1, K, H, W)
        ref = fuse_probabilities(net, batch.image[b:b + 1], batch.roi[b:b + 1], gaussians)
        got = fused[crop].transpose(2, 0, 1)
        roi = batch.roi[b].numpy()
        np.testing.assert_allclose(got[:, roi], ref[0].numpy()[:, roi], atol=2e-4)


def test_em_fuses_with_the_mu_data_files_class_gaussians(phantom_root, tmp_path):
    from deepgmm.mixture.fusion import fit_class_gaussians, read_class_gaussians

    mu = tmp_path / "mu.json"
    _run("mu-data", phantom_root, "--out", mu, "--patients", "103", "104", "--crop", "64")
    stored = read_class_gaussians(mu, 3)
    batch = make_batch(load_dataset(phantom_root, ["103", "104"]), crop_size=(64, 64),
                       require_labels=True)
    expected = fit_class_gaussians(batch, n_slices=10, seed=42)  # mu-data's defaults
    np.testing.assert_allclose(stored.covariances, expected.covariances, atol=1e-12)

    def em(name, *extra):
        out = tmp_path / name
        _run("em", phantom_root, "--out", out, "--model", "em-svgmm", "--mu-data", mu,
             "--patients", "102", "--crop", "64", "--matching", "none", "--no-figures",
             "--no-progress", *extra)
        prob = np.asanyarray(nib.load(str(out / "102_prob.nii.gz")).dataobj)
        return prob, json.loads((out / "run.json").read_text())

    fused, rec = em("default")
    plain, rec_none = em("none", "--fusion", "none")
    published, _ = em("published", "--recipe", "published")
    assert json.dumps(rec).count('"fusion": "labelled"') >= 1
    assert '"fusion": "labelled"' not in json.dumps(rec_none)
    np.testing.assert_array_equal(published, plain)
    batch = make_batch(load_dataset(phantom_root, ["102"]), crop_size=(64, 64))
    for b, z in enumerate(batch.slice_indices):
        x0, y0 = (int(v) for v in batch.crop_origins[b])
        crop = (slice(x0, x0 + 64), slice(y0, y0 + 64), int(z))
        net = torch.as_tensor(plain[crop].transpose(2, 0, 1)[None].copy())
        ref = fuse_probabilities(net, batch.image[b:b + 1], batch.roi[b:b + 1], stored)
        roi = batch.roi[b].numpy()
        np.testing.assert_allclose(fused[crop].transpose(2, 0, 1)[:, roi],
                                   ref[0].numpy()[:, roi], atol=2e-4)
    # without class Gaussians in the file (an older file, or hand-written means): no fusion
    doc = json.loads(mu.read_text())
    del doc["class_gaussians"]
    mu.write_text(json.dumps(doc))
    older, rec_old = em("older")
    np.testing.assert_array_equal(older, plain)
    assert '"fusion": "labelled"' not in json.dumps(rec_old)


def test_a_per_case_run_fuses_too(phantom_root, tmp_path):
    from deepgmm.mixture.fusion import read_class_gaussians

    pytest.importorskip("distributed")
    mu = tmp_path / "mu.json"
    _run("mu-data", phantom_root, "--out", mu, "--patients", "103", "104", "--crop", "64")
    common = ["--model", "em-svgmm", "--mu-data", mu, "--patients", "101", "102", "--crop",
              "64", "--matching", "none", "--no-figures", "--no-progress", "--resume"]
    _run("em", phantom_root, "--out", tmp_path / "fused", *common)
    _run("em", phantom_root, "--out", tmp_path / "none", *common, "--fusion", "none")
    summary = json.loads((tmp_path / "fused" / "summary.json").read_text())
    assert summary["maps"]["<case>_prob.nii.gz"]["labels"] == (
        "fused with labelled class Gaussians")
    gaussians = read_class_gaussians(mu, 3)
    batch = make_batch(load_dataset(phantom_root, ["101", "102"]), crop_size=(64, 64))
    maps = {(d, c): np.asanyarray(nib.load(str(tmp_path / d / f"{c}_prob.nii.gz")).dataobj)
            for d in ("fused", "none") for c in ("101", "102")}
    for b, (case, z) in enumerate(zip(batch.case_ids, batch.slice_indices, strict=True)):
        x0, y0 = (int(v) for v in batch.crop_origins[b])
        crop = (slice(x0, x0 + 64), slice(y0, y0 + 64), int(z))
        plain = torch.as_tensor(maps["none", case][crop].transpose(2, 0, 1)[None].copy())
        ref = fuse_probabilities(plain, batch.image[b:b + 1], batch.roi[b:b + 1], gaussians)
        roi = batch.roi[b].numpy()
        np.testing.assert_allclose(maps["fused", case][crop].transpose(2, 0, 1)[:, roi],
                                   ref[0].numpy()[:, roi], atol=2e-4)

    # a μ_data file without class Gaussians: nothing fused, and the records say so
    doc = json.loads(mu.read_text())
    del doc["class_gaussians"]
    mu.write_text(json.dumps(doc))
    _run("em", phantom_root, "--out", tmp_path / "older", *common)
    older = json.loads((tmp_path / "older" / "summary.json").read_text())
    assert older["maps"]["<case>_prob.nii.gz"]["labels"] == "as fitted"
    assert json.loads((tmp_path / "older" / "run.json").read_text())["resolved"][
        "fusion"] == "none"

def test_segment_one_case_fuses_with_the_mu_data_file(phantom_root, tmp_path):
    mu = tmp_path / "mu.json"
    _run("mu-data", phantom_root, "--out", mu, "--patients", "103", "104", "--crop", "64")
    gt = nib.load(next(phantom_root.rglob("*_102_gd.nii.gz")))
    roi = np.isin(np.asarray(gt.dataobj), [200, 500, 1220, 2221]).astype(np.uint8)
    nib.save(nib.Nifti1Image(roi, gt.affine), tmp_path / "roi.nii.gz")
    images = [a for s in ("C0", "DE", "T2")
              for a in ("--image", f"{s}={next(phantom_root.rglob(f'*_102_{s}.*'))}")]
    labels = {}
    for name, extra in (("fused", []), ("none", ["--fusion", "none"])):
        _run("segment", *images, "--roi", tmp_path / "roi.nii.gz", "--model", "em-svgmm",
             "--mu-data", mu, "--crop", "64", "--no-progress", "--no-figures", "--out",
             tmp_path / name, *extra)
        maps = json.loads((tmp_path / name / "summary.json").read_text())["maps"]
        labels[name] = maps["<case>_prob.nii.gz"]["labels"]
    assert labels == {"fused": "fused with labelled class Gaussians", "none": "as fitted"}
    fused, plain = (np.asanyarray(nib.load(str(tmp_path / n / "case_prob.nii.gz")).dataobj)
                    for n in ("fused", "none"))
    assert not np.allclose(fused, plain, atol=1e-3)
