"""Training options together: ROI context channels, the Potts term, the class prior of
prior="all" and several components per class in one run (loss, record, predict, resume),
and configs written before any of them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from deepgmm.data.class_prior import compute_class_prior
from deepgmm.data.mu_data import compute_mu_data
from deepgmm.data.slices import make_batch
from deepgmm.errors import CheckpointError, InputError
from deepgmm.fit import train as train_mod
from deepgmm.fit.labelled import labelled_cross_entropy, labelled_targets
from deepgmm.fit.loss import nll_of_log_resp, pack_slices
from deepgmm.fit.potts import potts_energy
from deepgmm.fit.predict import predict
from deepgmm.fit.train import train_network
from deepgmm.mixture.prior import ParameterPrior
from deepgmm.nets.context import context_channels
from deepgmm.nets.unet import UNet
from deepgmm.types import SliceBatch

SMALL = {"depth": 2, "base_filters": 4, "progress": False, "device": "cpu"}
ALL = {"context": "distance+radius", "potts_weight": 0.5, "prior": "all", "lam_var": 0.5,
       "lam_weights": 2.0, "components_per_class": 2}
NEWER = ("context", "potts_weight", "prior", "lam_var", "lam_weights", "class_prior",
         "components_per_class")


@pytest.fixture(scope="module")
def batch(phantom_volumes) -> SliceBatch:  # noqa: ANN001
    """The first 4 all-class phantom slices, 64 x 64 crops, with labels."""
    full = make_batch(phantom_volumes, crop_size=(64, 64), require_labels=True)
    return SliceBatch(image=full.image[:4], roi=full.roi[:4], labels=full.labels[:4],
                      case_ids=full.case_ids[:4], slice_indices=full.slice_indices[:4],
                      crop_origins=full.crop_origins[:4], full_shapes=full.full_shapes[:4],
                      sequences=full.sequences, spacing=full.spacing[:4])


def test_loss_with_every_option_is_the_hand_computed_sum(batch: SliceBatch) -> None:
    """Context channels in, 2 components per class out; the mean and prior penalties act on
    the classes' component mixtures, the cross-entropy and the Potts energy on the class
    probabilities (sums of a class's components)."""
    torch.manual_seed(0)
    net = UNet(5, n_classes=8, depth=2, base_filters=4)
    mu = torch.as_tensor(compute_mu_data(batch), dtype=torch.float32)
    stats = compute_class_prior(batch)
    prior = ParameterPrior(log_variances=torch.as_tensor(stats.log_variances).float(),
                           weights=torch.as_tensor(stats.weights).float(), lam_var=0.7,
                           lam_weights=2.5)
    target, _ = labelled_targets(batch, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.0)
    image, roi = batch.image.float(), batch.roi.bool()
    _, loss_sum = train_mod._run_epoch(
        net, opt, image, roi, model="deepsvg", lam=1.0, mu=mu, batch_size=len(batch),
        penalty="batch", clip_norm=None, generator_seed=0, aug_cfg=None,
        dev=torch.device("cpu"), target=target, label_weight=1.5, context="distance+radius",
        potts_weight=2.5, param_prior=prior, per_class=2)
    with torch.no_grad():
        net_in = torch.cat([image, context_channels(roi, "distance+radius")], dim=1)
        log_resp = torch.log_softmax(net.train()(net_in), dim=1).double()
        nll, params = nll_of_log_resp(log_resp, pack_slices(image.double(), roi), "deepsvg")
    b = len(batch)
    w = params.weights.reshape(b, 4, 2, 1)
    share = w / w.sum(2, keepdim=True)
    means = (share * params.means.reshape(b, 4, 2, 3)).sum(2)
    var = (share * (params.covariances.reshape(b, 4, 2, 3)
                    + params.means.reshape(b, 4, 2, 3) ** 2)).sum(2) - means ** 2
    class_w = w.sum(dim=(2, 3))
    class_resp = log_resp.exp().reshape(b, 4, 2, 64, 64).sum(2)
    lv_t = torch.as_tensor(stats.log_variances)
    w_t = torch.as_tensor(stats.weights)
    ce = labelled_cross_entropy(class_resp.log(), target, roi).mean()
    potts = potts_energy(class_resp, roi).mean()
    expected = (nll.mean() + ((means.mean(0) - mu.double()) ** 2).sum()
                + 0.7 * ((var.log().mean(0) - lv_t) ** 2).sum()
                + 2.5 * (w_t * (w_t / class_w.mean(0)).log()).sum()
                + 1.5 * ce + 2.5 * potts)
    assert loss_sum / b == pytest.approx(float(expected), rel=1e-5)
    # the component-level terms differ: disagreement between a class's two components is
    # no boundary, and component k - 1 is not class k
    component_potts = potts_energy(log_resp.exp(), roi).mean()
    component_ce = labelled_cross_entropy(log_resp, target, roi).mean()
    assert float(potts - component_potts) < -1e-3
    assert abs(float(ce - component_ce)) > 1e-2


def test_every_option_trains_records_predicts_and_resumes(batch: SliceBatch,
                                                         tmp_path: Path) -> None:
    run = tmp_path / "run"
    kw = {"model": "deepsvg", "lam": 1.0, "epochs": 2, "min_epochs": 2, "seed": 0,
          "label_weight": 1.0, **ALL, **SMALL}
    res = train_network(batch, run_dir=run, **kw)
    config = json.loads((run / "config.json").read_text())
    assert {k: config[k] for k in ALL} == ALL
    assert config["label_weight"] == 1.0 and config["n_classes"] == 4
    assert config["network"]["in_channels"] == 5 and config["network"]["n_classes"] == 8
    stats = compute_class_prior(batch)
    torch.testing.assert_close(torch.tensor(config["class_prior"]["weights"]),
                               torch.as_tensor(stats.weights).float())
    # predict: context channels from the slices' ROI in, class sums of the components out
    out = predict(run, batch, device="cpu")
    with torch.no_grad():
        net_in = torch.cat([batch.image, context_channels(batch.roi, "distance+radius")], 1)
        probs = torch.softmax(res.network.cpu().eval()(net_in), dim=1)
    expected = probs.reshape(4, 4, 2, 64, 64).sum(2)
    inside = batch.roi.unsqueeze(1).expand_as(expected)
    torch.testing.assert_close(out.responsibilities[inside], expected[inside], rtol=1e-5,
                               atol=1e-6)
    assert out.means.shape == (4, 4, 3)
    tta = predict(run, batch, device="cpu", tta=True)
    torch.testing.assert_close(tta.responsibilities.sum(1)[batch.roi],
                               torch.ones(int(batch.roi.sum())), rtol=1e-5, atol=1e-5)
    with pytest.raises(InputError, match="refine"):
        predict(run, batch, device="cpu", refine=1)
    # resume: the same settings return the finished run; any other one is refused by name
    again = train_network(batch, run_dir=run, resume=True, **kw)
    assert again.nll_history == res.nll_history
    for key, other in [("context", "distance"), ("potts_weight", 0.0), ("prior", "means"),
                       ("lam_var", 1.0), ("lam_weights", 1.0), ("components_per_class", 1)]:
        with pytest.raises(CheckpointError, match=key):
            train_network(batch, run_dir=run, resume=True, **{**kw, key: other})


def test_config_without_the_newer_settings_loads_predicts_and_resumes(
        batch: SliceBatch, tmp_path: Path) -> None:
    """A config.json written before context, potts_weight, prior, lam_var, lam_weights,
    class_prior and components_per_class existed: they count as their published values."""
    kw = {"model": "deepsvg", "lam": 1.0, "epochs": 2, "min_epochs": 2, "seed": 0, **SMALL}
    res = train_network(batch, run_dir=tmp_path, **kw)
    before = predict(tmp_path, batch, device="cpu")
    path = tmp_path / "config.json"
    cfg = json.loads(path.read_text())
    assert all(key in cfg for key in NEWER)
    for key in NEWER:
        del cfg[key]
    path.write_text(json.dumps(cfg))
    after = predict(tmp_path, batch, device="cpu")
    assert torch.equal(after.responsibilities, before.responsibilities)
    assert torch.equal(after.means, before.means)
    assert predict(tmp_path, batch, device="cpu", refine=1).responsibilities.shape == (
        4, 4, 64, 64)
    again = train_network(batch, run_dir=tmp_path, resume=True, **kw)
    assert again.nll_history == res.nll_history
    for key, other in [("context", "distance"), ("potts_weight", 1.0), ("prior", "all"),
                       ("components_per_class", 2)]:
        with pytest.raises(CheckpointError, match=f"{key}: checkpoint"):
            train_network(batch, run_dir=tmp_path, resume=True, **{**kw, key: other})
