"""components_per_class > 1 in training and prediction: the network has K * J outputs,
the penalty acts on each class's component mixture, prediction sums a class's components."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from deepgmm.data.mu_data import compute_mu_data
from deepgmm.data.slices import make_batch
from deepgmm.errors import CheckpointError, InputError
from deepgmm.fit import train as train_mod
from deepgmm.fit.predict import predict
from deepgmm.fit.train import train_network
from deepgmm.mixture.likelihood import svgmm_nll
from deepgmm.mixture.subclasses import class_params
from deepgmm.types import SliceBatch

SMALL = {"depth": 2, "base_filters": 4, "progress": False, "device": "cpu"}


@pytest.fixture(scope="module")
def batch(phantom_volumes) -> SliceBatch:  # noqa: ANN001
    full = make_batch(phantom_volumes, crop_size=(64, 64), require_labels=True)
    return SliceBatch(image=full.image[:4], roi=full.roi[:4], labels=full.labels[:4],
                      case_ids=full.case_ids[:4], slice_indices=full.slice_indices[:4],
                      crop_origins=full.crop_origins[:4], full_shapes=full.full_shapes[:4],
                      sequences=full.sequences, spacing=full.spacing[:4])


def test_penalty_acts_on_the_class_mixture_means(batch: SliceBatch) -> None:
    from deepgmm.nets.unet import UNet

    torch.manual_seed(0)
    net = UNet(3, n_classes=8, depth=2, base_filters=4)
    mu = torch.as_tensor(compute_mu_data(batch), dtype=torch.float32)
    opt = torch.optim.SGD(net.parameters(), lr=0.0)
    _, loss_sum = train_mod._run_epoch(
        net, opt, batch.image.float(), batch.roi.bool(), model="deepsvg", lam=1.0, mu=mu,
        batch_size=len(batch), penalty="batch", clip_norm=None, generator_seed=0,
        aug_cfg=None, dev=torch.device("cpu"), per_class=2)
    with torch.no_grad():
        log_resp = torch.log_softmax(net.train()(batch.image.float()), dim=1)
        nll, params = svgmm_nll(log_resp, batch.image.float(), batch.roi)
    # class k's mean: the mass-weighted mean of components 2k and 2k + 1
    w = params.weights.double().reshape(4, 4, 2, 1)
    means = (w * params.means.double().reshape(4, 4, 2, 3)).sum(2) / w.sum(2)
    expected = nll.double().mean() + ((means.mean(0) - mu.double()) ** 2).sum()
    assert loss_sum / len(batch) == pytest.approx(float(expected), rel=1e-5)
    torch.testing.assert_close(class_params(params, 2).means.double(), means)


def test_two_components_per_class_train_predict_and_resume(batch: SliceBatch,
                                                           tmp_path: Path) -> None:
    kw = {"model": "deepsvg", "lam": 1.0, "epochs": 2, "min_epochs": 2, "seed": 0,
          "augment": False, "components_per_class": 2, "prior": "all", **SMALL}
    res = train_network(batch, run_dir=tmp_path / "run", **kw)
    assert res.config["components_per_class"] == 2 and res.config["n_classes"] == 4
    assert res.network.config["n_classes"] == 8
    out = predict(tmp_path / "run", batch, device="cpu")
    assert out.responsibilities.shape == (4, 4, 64, 64)
    assert out.means.shape == (4, 4, 3)
    inside = batch.roi.unsqueeze(1).expand_as(out.responsibilities)
    np.testing.assert_allclose(out.responsibilities.sum(1).numpy()[batch.roi.numpy()], 1.0,
                               rtol=1e-5)
    with torch.no_grad():
        log_resp = torch.log_softmax(res.network.cpu()(batch.image), dim=1)
    summed = log_resp.exp().reshape(4, 4, 2, 64, 64).sum(2)
    torch.testing.assert_close(out.responsibilities[inside], summed[inside], rtol=1e-5,
                               atol=1e-6)
    with pytest.raises(InputError, match="components per class"):
        predict(tmp_path / "run", batch, device="cpu", refine=2)
    again = train_network(batch, run_dir=tmp_path / "run", resume=True, **kw)
    assert again.nll_history == res.nll_history
    with pytest.raises(CheckpointError, match="components_per_class"):
        train_network(batch, run_dir=tmp_path / "run", resume=True,
                      **{**kw, "components_per_class": 1})
    with pytest.raises(InputError, match="components_per_class"):
        train_network(batch, **{**kw, "components_per_class": 0})
