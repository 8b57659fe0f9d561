"""prior="all" in training: the loss adds the variance and weight penalties, the class
statistics are stored and checked on resume, and the default leaves training as it was."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from deepgmm.data.class_prior import compute_class_prior
from deepgmm.data.mu_data import compute_mu_data
from deepgmm.data.slices import make_batch
from deepgmm.errors import CheckpointError, InputError
from deepgmm.fit import train as train_mod
from deepgmm.fit.loss import nll_of_log_resp, pack_slices
from deepgmm.fit.train import train_network
from deepgmm.mixture.prior import ParameterPrior
from deepgmm.types import SliceBatch

SMALL = {"depth": 2, "base_filters": 4, "progress": False, "device": "cpu"}


@pytest.fixture(scope="module")
def batch(phantom_volumes) -> SliceBatch:  # noqa: ANN001
    """The first 4 all-class phantom slices, 64 x 64 crops, with labels."""
    full = make_batch(phantom_volumes, crop_size=(64, 64), require_labels=True)
    return SliceBatch(image=full.image[:4], roi=full.roi[:4], labels=full.labels[:4],
                      case_ids=full.case_ids[:4], slice_indices=full.slice_indices[:4],
                      crop_origins=full.crop_origins[:4], full_shapes=full.full_shapes[:4],
                      sequences=full.sequences, spacing=full.spacing[:4])


@pytest.mark.parametrize("penalty", ["batch", "slice"])
def test_loss_adds_the_hand_computed_prior_terms(batch: SliceBatch, penalty: str) -> None:
    from deepgmm.nets.unet import UNet

    torch.manual_seed(0)
    net = UNet(3, n_classes=4, depth=2, base_filters=4)
    mu = torch.as_tensor(compute_mu_data(batch), dtype=torch.float32)
    stats = compute_class_prior(batch)
    prior = ParameterPrior(log_variances=torch.as_tensor(stats.log_variances).float(),
                           weights=torch.as_tensor(stats.weights).float(), lam_var=0.7,
                           lam_weights=2.5)
    opt = torch.optim.SGD(net.parameters(), lr=0.0)
    _, loss_sum = train_mod._run_epoch(
        net, opt, batch.image.float(), batch.roi.bool(), model="deepsvg", lam=1.0, mu=mu,
        batch_size=len(batch), penalty=penalty, clip_norm=None, generator_seed=0,
        aug_cfg=None, dev=torch.device("cpu"), param_prior=prior)
    with torch.no_grad():
        log_resp = torch.log_softmax(net.train()(batch.image.float()), dim=1)
        nll, params = nll_of_log_resp(log_resp, pack_slices(batch.image.float(), batch.roi),
                                      "deepsvg")
    means, w, var = params.means.double(), params.weights.double(), params.covariances.double()
    lv_t = torch.as_tensor(stats.log_variances)
    w_t = torch.as_tensor(stats.weights)
    if penalty == "batch":
        mean_term = ((means.mean(0) - mu.double()) ** 2).sum()
        var_term = ((var.log().mean(0) - lv_t) ** 2).sum()
        wbar = w.mean(0)
        weight_term = (w_t * (w_t / wbar).log()).sum()
    else:
        mean_term = ((means - mu.double()) ** 2).sum(dim=(1, 2)).mean()
        var_term = ((var.log() - lv_t) ** 2).sum(dim=(1, 2)).mean()
        weight_term = (w_t * (w_t / w).log()).sum(dim=1).mean()
    expected = nll.double().mean() + mean_term + 0.7 * var_term + 2.5 * weight_term
    assert 0.7 * var_term + 2.5 * weight_term > 1e-3  # the prior terms matter here
    assert loss_sum / len(batch) == pytest.approx(float(expected), rel=1e-5)


def test_prior_all_trains_records_and_resumes(batch: SliceBatch, tmp_path: Path) -> None:
    kw = {"model": "deepsvg", "lam": 1.0, "epochs": 2, "min_epochs": 2, "seed": 0,
          "augment": False, **SMALL}
    base = train_network(batch, **kw)
    res = train_network(batch, prior="all", lam_var=0.5, lam_weights=2.0,
                        run_dir=tmp_path / "run", **kw)
    assert res.nll_history != base.nll_history
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["prior"] == "all" and config["lam_var"] == 0.5
    assert config["lam_weights"] == 2.0
    stats = compute_class_prior(batch)  # the μ_data draw: 10 slices (all 4 here), seed 42
    np.testing.assert_allclose(config["class_prior"]["log_variances"], stats.log_variances)
    np.testing.assert_allclose(config["class_prior"]["weights"], stats.weights)
    again = train_network(batch, prior="all", lam_var=0.5, lam_weights=2.0,
                          run_dir=tmp_path / "run", resume=True, **kw)
    assert again.nll_history == res.nll_history
    with pytest.raises(CheckpointError, match="lam_var"):
        train_network(batch, prior="all", lam_var=1.0, lam_weights=2.0,
                      run_dir=tmp_path / "run", resume=True, **kw)
    with pytest.raises(CheckpointError, match="prior"):
        train_network(batch, run_dir=tmp_path / "run", resume=True, **kw)
    # resuming without labels takes μ_data and the class prior from the checkpoint
    unlabelled = SliceBatch(**{**batch.__dict__, "labels": None})
    resumed = train_network(unlabelled, prior="all", lam_var=0.5, lam_weights=2.0,
                            run_dir=tmp_path / "run", resume=True, **kw)
    assert resumed.config["class_prior"] == config["class_prior"]
    # a given class prior is used as is
    other = compute_class_prior(batch, n_slices=2, seed=0)
    given = train_network(batch, prior="all", class_prior=other, **kw)
    np.testing.assert_allclose(given.config["class_prior"]["weights"], other.weights)


def test_default_is_the_published_loss(batch: SliceBatch) -> None:
    """prior="means" ignores lam_var / lam_weights (recorded as given) and records no class
    statistics."""
    kw = {"model": "deepsvg", "lam": 1.0, "epochs": 1, "min_epochs": 1, "seed": 0, **SMALL}
    a = train_network(batch, **kw)
    b = train_network(batch, prior="means", lam_var=3.0, lam_weights=3.0, **kw)
    assert a.nll_history == b.nll_history and a.loss_history == b.loss_history
    for pa, pb in zip(a.network.parameters(), b.network.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert a.config["prior"] == "means" and a.config["class_prior"] is None
    assert b.config["lam_var"] == 3.0 and b.config["class_prior"] is None


def test_bad_prior_settings_refused(batch: SliceBatch) -> None:
    with pytest.raises(InputError, match="'prior' parameter of train_network must be a str among"):
        train_network(batch, prior="everything", **SMALL)
    with pytest.raises(InputError, match="'lam_var' parameter of train_network"):
        train_network(batch, prior="all", lam_var=-1.0, **SMALL)
    with pytest.raises(InputError, match="'lam_weights' parameter of train_network"):
        train_network(batch, prior="all", lam_weights=float("nan"), **SMALL)
    unlabelled = SliceBatch(**{**batch.__dict__, "labels": None})
    mu = compute_mu_data(batch)
    with pytest.raises(InputError, match="prior 'all' needs class statistics"):
        train_network(unlabelled, prior="all", mu_data=mu, **SMALL)
    with pytest.raises(InputError, match="class_prior must have"):
        train_network(batch, prior="all", class_prior={"means": mu.tolist(),
                                                       "log_variances": [[0.0]],
                                                       "weights": [1.0]}, **SMALL)
