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
    np.testing.assert_array_equal(published, plain)
    assert not np.allclose(fused, plain, atol=1e-3)
    # the default's map is the fusion of the network's probabilities with the run's class
    # Gaussians: recompute it from the written network map, on each slice's crop
    config = json.loads((run / "config.json").read_text())
    gaussians = ClassGaussians.from_dict(config["class_gaussians"], 4, 3)
    batch = make_batch(load_dataset(phantom_root, ["102"]), crop_size=(64, 64))
    for b, z in enumerate(batch.slice_indices):
        x0, y0 = (int(v) for v in batch.crop_origins[b])
        crop = (slice(x0, x0 + 64), slice(y0, y0 + 64), int(z))
        net = torch.as_tensor(plain[crop].transpose(2, 0, 1)[None].copy())  # (1, K, H, W)
        ref = fuse_probabilities(net, batch.image[b:b + 1], batch.roi[b:b + 1], gaussians)
        got = fused[crop].transpose(2, 0, 1)
        roi = batch.roi[b].numpy()
        np.testing.assert_allclose(got[:, roi], ref[0].numpy()[:, roi], atol=2e-4)
