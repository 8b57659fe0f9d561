"""Training options beyond the published loss: ROI context channels and the Potts term."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from deepgmm.data.mu_data import compute_mu_data
from deepgmm.data.slices import make_batch
from deepgmm.errors import CheckpointError, InputError
from deepgmm.fit import train as train_mod
from deepgmm.fit.loss import nll_of_log_resp, pack_slices
from deepgmm.fit.potts import potts_energy
from deepgmm.fit.predict import predict
from deepgmm.fit.train import train_network
from deepgmm.nets.context import context_channels
from deepgmm.nets.unet import UNet
from deepgmm.types import SliceBatch

SMALL = {"depth": 2, "base_filters": 4, "progress": False, "device": "cpu"}


@pytest.fixture(scope="module")
def batch(phantom_volumes) -> SliceBatch:  # noqa: ANN001
    """The 12 all-class phantom slices, 64 x 64 crops, with labels."""
    return make_batch(phantom_volumes, crop_size=(64, 64), require_labels=True)


def _subset(batch: SliceBatch, n: int) -> SliceBatch:
    return SliceBatch(image=batch.image[:n], roi=batch.roi[:n], labels=batch.labels[:n],
                      case_ids=batch.case_ids[:n], slice_indices=batch.slice_indices[:n],
                      crop_origins=batch.crop_origins[:n], full_shapes=batch.full_shapes[:n],
                      sequences=batch.sequences, spacing=batch.spacing[:n])


def _epoch_loss(batch: SliceBatch, **options: object) -> tuple[float, UNet]:
    """Summed loss of one epoch (one mini-batch, no step: lr 0) from fixed weights."""
    in_channels = 3 + (2 if options.get("context") == "distance+radius" else 0)
    torch.manual_seed(0)
    net = UNet(in_channels, n_classes=4, depth=2, base_filters=4)
    mu = torch.as_tensor(compute_mu_data(batch), dtype=torch.float32)
    opt = torch.optim.SGD(net.parameters(), lr=0.0)
    _, loss_sum = train_mod._run_epoch(
        net, opt, batch.image.float(), batch.roi.bool(), model="deepsvg", lam=1.0, mu=mu,
        batch_size=len(batch), penalty="batch", clip_norm=None, generator_seed=0,
        aug_cfg=None, dev=torch.device("cpu"), **options)  # type: ignore[arg-type]
    return loss_sum / len(batch), net


def test_potts_weight_adds_its_energy_to_the_loss(batch: SliceBatch) -> None:
    sub = _subset(batch, 3)
    base, net = _epoch_loss(sub)
    with_potts, _ = _epoch_loss(sub, potts_weight=2.5)
    with torch.no_grad():
        log_resp = torch.log_softmax(net(sub.image), dim=1)
        energy = float(potts_energy(log_resp.exp(), sub.roi).mean())
    assert energy > 0.01
    assert with_potts == pytest.approx(base + 2.5 * energy, rel=1e-5)


def test_context_channels_feed_the_network_not_the_likelihood(batch: SliceBatch) -> None:
    sub = _subset(batch, 3)
    loss, net = _epoch_loss(sub, context="distance+radius")
    mu = torch.as_tensor(compute_mu_data(sub), dtype=torch.float32)
    with torch.no_grad():
        net_in = torch.cat([sub.image, context_channels(sub.roi, "distance+radius")], dim=1)
        nll, mixture = nll_of_log_resp(torch.log_softmax(net(net_in), dim=1),
                                       pack_slices(sub.image, sub.roi), "deepsvg")
        means = mixture.means
    expected = float(nll.mean() + ((means.mean(0) - mu) ** 2).sum())
    assert loss == pytest.approx(expected, rel=1e-5)


def test_options_off_leave_training_unchanged(batch: SliceBatch) -> None:
    """Explicit defaults train the same weights as a call that does not name them."""
    sub = _subset(batch, 5)
    kw = {"model": "deepsvg", "lam": 1.0, "epochs": 1, "min_epochs": 1, "seed": 3, **SMALL}
    plain = train_network(sub, **kw)
    named = train_network(sub, context="none", potts_weight=0.0, **kw)
    assert plain.nll_history == named.nll_history
    for a, b in zip(plain.network.parameters(), named.network.parameters(), strict=True):
        assert torch.equal(a, b)
    assert plain.network.config["in_channels"] == 3
    smooth = train_network(sub, potts_weight=1.0, **kw)
    assert smooth.loss_history != plain.loss_history


def test_context_run_records_predicts_and_resumes(batch: SliceBatch, tmp_path: Path) -> None:
    run = tmp_path / "run"
    sub = _subset(batch, 5)
    kw = {"model": "deepsvg", "lam": 1.0, "epochs": 2, "min_epochs": 2, "seed": 0,
          "context": "distance+radius", "potts_weight": 0.5, **SMALL}
    res = train_network(sub, run_dir=run, **kw)
    config = json.loads((run / "config.json").read_text())
    assert config["context"] == "distance+radius" and config["potts_weight"] == 0.5
    assert config["network"]["in_channels"] == 5
    # predict computes the channels from the slices' ROI, plain and with TTA.
    out = predict(run, batch, device="cpu", chunk_size=5)
    with torch.no_grad():
        net_in = torch.cat([batch.image, context_channels(batch.roi, "distance+radius")], 1)
        expected = torch.softmax(res.network.cpu().eval()(net_in), dim=1)
    assert torch.allclose(out.responsibilities, expected, atol=1e-6)
    tta = predict(run, batch, device="cpu", tta=True)
    assert torch.allclose(tta.responsibilities.sum(dim=1), torch.ones(12, 64, 64), atol=1e-5)
    with pytest.raises(InputError, match="trained with context 'distance\\+radius'"):
        predict(run, batch, device="cpu", refine=1)
    # Resuming needs the same options; a finished run is returned as is.
    again = train_network(sub, run_dir=run, resume=True, **kw)
    assert again.nll_history == res.nll_history
    with pytest.raises(CheckpointError, match="context"):
        train_network(sub, run_dir=run, resume=True, **{**kw, "context": "distance"})
    with pytest.raises(CheckpointError, match="potts_weight"):
        train_network(sub, run_dir=run, resume=True, **{**kw, "potts_weight": 0.0})


def test_augmented_training_with_context_runs(batch: SliceBatch) -> None:
    """With augmentation the channels come from the warped ROI; the NLL still falls."""
    res = train_network(batch, model="deepsvg", lam=1.0, epochs=3, min_epochs=3, lr=2e-3,
                        seed=0, context="distance", **SMALL)
    assert res.network.config["in_channels"] == 4
    assert res.nll_history[-1] < res.nll_history[0]


def test_bad_options_refused(batch: SliceBatch) -> None:
    with pytest.raises(InputError, match="'context' parameter of train_network must be a str "
                                         "among"):
        train_network(batch, context="radius", **SMALL)
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(InputError, match="'potts_weight' parameter of train_network"):
            train_network(batch, potts_weight=bad, **SMALL)
