"""A few labelled slices in training: which slices, the cross-entropy, the training term."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from deepgmm.data.mu_data import compute_mu_data, draw_slices
from deepgmm.data.slices import make_batch
from deepgmm.errors import CheckpointError, InputError
from deepgmm.fit import train as train_mod
from deepgmm.fit.labelled import labelled_cross_entropy, labelled_targets
from deepgmm.fit.train import train_network
from deepgmm.nets.unet import UNet
from deepgmm.types import SliceBatch

SMALL = {"depth": 2, "base_filters": 4, "progress": False, "device": "cpu"}


@pytest.fixture(scope="module")
def batch(phantom_volumes) -> SliceBatch:  # noqa: ANN001
    """The 12 all-class phantom slices, 64 x 64 crops, with labels."""
    return make_batch(phantom_volumes, crop_size=(64, 64), require_labels=True)


def test_targets_are_the_mu_data_slices_labels(batch: SliceBatch) -> None:
    target, chosen = labelled_targets(batch, n_slices=5)
    assert np.array_equal(chosen, draw_slices(len(batch), 5, 42))
    # The same draw defines mu_data: the class means of the targets are mu_data.
    onehot = F.one_hot(target, 5)[..., 1:].permute(0, 3, 1, 2).double()  # (B, K, H, W)
    sums = torch.einsum("bkhw,bmhw->km", onehot, batch.image.double())
    mu = (sums / onehot.sum(dim=(0, 2, 3))[:, None]).numpy()
    np.testing.assert_allclose(mu, compute_mu_data(batch, n_slices=5), atol=1e-10)
    others = np.setdiff1d(np.arange(len(batch)), chosen)
    assert int(target[torch.from_numpy(others)].abs().sum()) == 0
    inside = batch.roi[torch.from_numpy(chosen)]
    assert torch.equal(target[torch.from_numpy(chosen)][inside],
                       batch.labels[torch.from_numpy(chosen)][inside])
    assert int(target[torch.from_numpy(chosen)][~inside].abs().sum()) == 0


def test_targets_need_labels_and_a_positive_count(batch: SliceBatch) -> None:
    with pytest.raises(InputError, match="ground truth"):
        labelled_targets(SliceBatch(**{**batch.__dict__, "labels": None}))
    with pytest.raises(InputError, match="at least 1"):
        labelled_targets(batch, n_slices=0)


def test_cross_entropy_against_torch_per_slice() -> None:
    g = torch.Generator().manual_seed(0)
    log_resp = torch.log_softmax(torch.randn(3, 4, 6, 5, generator=g), dim=1)
    target = torch.randint(0, 5, (3, 6, 5), generator=g)
    target[2] = 0  # a slice without labels
    roi = torch.rand(3, 6, 5, generator=g) > 0.3
    got = labelled_cross_entropy(log_resp, target, roi)
    for b in range(2):  # reference: torch's cross-entropy on the labelled ROI pixels
        keep = roi[b] & (target[b] > 0)
        ref = F.nll_loss(log_resp[b].permute(1, 2, 0)[keep], target[b][keep] - 1)
        assert float(got[b]) == pytest.approx(float(ref), rel=1e-6)
    assert float(got[2]) == 0.0
    # A certain, correct network has no cross-entropy.
    sure = torch.log(F.one_hot((target - 1).clamp_min(0), 4).permute(0, 3, 1, 2).float()
                     .clamp_min(1e-30))
    assert torch.allclose(labelled_cross_entropy(sure, target, roi), torch.zeros(3), atol=1e-6)


def test_epoch_loss_adds_the_weighted_cross_entropy(batch: SliceBatch) -> None:
    """One full-batch step: loss = NLL + lam * penalty + w * mean_b CE_b (hand computation)."""
    sub = SliceBatch(**{**batch.__dict__, "image": batch.image[:4], "roi": batch.roi[:4],
                        "labels": batch.labels[:4], "case_ids": batch.case_ids[:4],
                        "slice_indices": batch.slice_indices[:4]})
    target, chosen = labelled_targets(sub, n_slices=2)
    unlabelled = np.setdiff1d(np.arange(4), chosen)
    mu = torch.as_tensor(compute_mu_data(sub), dtype=torch.float32)
    losses = {}
    for weight in (0.0, 2.5):
        torch.manual_seed(0)
        net = UNet(3, n_classes=4, depth=2, base_filters=4)
        if weight:
            with torch.no_grad():
                log_resp = torch.log_softmax(net(sub.image.float()), dim=1)
                ce = labelled_cross_entropy(log_resp, target, sub.roi.bool())
        opt = torch.optim.SGD(net.parameters(), lr=0.0)
        _, loss_sum = train_mod._run_epoch(
            net, opt, sub.image.float(), sub.roi.bool(), model="deepg", lam=1.0, mu=mu,
            batch_size=4, penalty="batch", clip_norm=None, generator_seed=0, aug_cfg=None,
            dev=torch.device("cpu"), target=target, label_weight=weight)
        losses[weight] = loss_sum / 4
    assert float(ce[unlabelled].abs().sum()) == 0.0 and bool((ce[chosen] > 0).all())
    assert losses[2.5] - losses[0.0] == pytest.approx(2.5 * float(ce.mean()), rel=1e-5)


def test_labels_teach_the_network(batch: SliceBatch, tmp_path: Path) -> None:
    kw = {"model": "deepg", "lam": 1.0, "epochs": 10, "min_epochs": 10, "lr": 3e-3,
          "seed": 0, "augment": False, **SMALL}
    plain = train_network(batch, **kw)
    taught = train_network(batch, label_weight=5.0, run_dir=tmp_path / "run", **kw)
    target, chosen = labelled_targets(batch)
    with torch.no_grad():
        ce = {name: float(labelled_cross_entropy(
            torch.log_softmax(res.network(batch.image), dim=1), target, batch.roi).sum())
            / len(chosen) for name, res in (("plain", plain), ("taught", taught))}
    assert ce["taught"] < ce["plain"] - 0.05
    config = taught.config
    assert config["label_weight"] == 5.0
    assert config["labelled_slices"] == [[batch.case_ids[i], int(batch.slice_indices[i])]
                                         for i in chosen]
    assert plain.config["labelled_slices"] == []
    with pytest.raises(CheckpointError, match="label_weight"):
        train_network(batch, label_weight=2.0, run_dir=tmp_path / "run", resume=True, **kw)


def test_bad_label_settings_refused(batch: SliceBatch) -> None:
    with pytest.raises(InputError, match="label_weight"):
        train_network(batch, label_weight=-1.0, **SMALL)
    with pytest.raises(InputError, match="label_weight"):
        train_network(batch, label_weight=float("nan"), **SMALL)
    unlabelled = SliceBatch(**{**batch.__dict__, "labels": None})
    with pytest.raises(InputError, match="ground truth"):
        train_network(unlabelled, lam=0.0, label_weight=1.0, **SMALL)
