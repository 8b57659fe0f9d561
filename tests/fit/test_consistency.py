"""The Π-model consistency term: the view, the loss, and its place in the training loss."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from deepgmm.data.slices import make_batch
from deepgmm.errors import InputError
from deepgmm.fit import consistency as cons
from deepgmm.fit import train as train_mod
from deepgmm.fit.train import train_network
from deepgmm.nets.unet import UNet


def test_loss_is_the_mean_squared_probability_difference_over_the_roi() -> None:
    # Two pixels inside the ROI, one outside (which must not count).
    p = torch.tensor([[0.5, 0.2, 0.9], [0.5, 0.8, 0.1]]).reshape(1, 2, 1, 3)
    q = torch.tensor([[1.0, 0.2, 0.0], [0.0, 0.8, 1.0]]).reshape(1, 2, 1, 3)
    roi = torch.tensor([[[True, True, False]]])
    # pixel 0: (0.5)^2 + (0.5)^2 = 0.5; pixel 1: 0 -> mean 0.25.
    out = cons.consistency_loss(p.log(), q.clamp_min(1e-30).log(), roi)
    assert out.shape == (1,)
    assert float(out[0]) == pytest.approx(0.25, rel=1e-6)


def test_empty_roi_gives_zero_and_bad_shapes_are_refused() -> None:
    lp = torch.log_softmax(torch.randn(2, 3, 4, 4), dim=1)
    assert torch.equal(cons.consistency_loss(lp, lp.flip(-1), torch.zeros(2, 4, 4).bool()),
                       torch.zeros(2))
    with pytest.raises(InputError, match="consistency_loss needs"):
        cons.consistency_loss(lp, lp[:, :2], torch.ones(2, 4, 4).bool())
    with pytest.raises(InputError, match="second_view needs"):
        cons.second_view(torch.zeros(2, 3, 4, 4), torch.ones(2, 4, 5).bool(),
                         torch.Generator().manual_seed(0))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), k=st.integers(2, 5))
def test_loss_is_zero_for_equal_maps_and_within_0_2(seed: int, k: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    a = torch.log_softmax(torch.randn(2, k, 5, 6, generator=gen) * 5, dim=1)
    b = torch.log_softmax(torch.randn(2, k, 5, 6, generator=gen) * 5, dim=1)
    roi = torch.rand(2, 5, 6, generator=gen) > 0.3
    assert torch.allclose(cons.consistency_loss(a, a, roi), torch.zeros(2))
    val = cons.consistency_loss(a, b, roi)
    assert bool((val >= 0).all()) and bool((val <= 2 + 1e-6).all())


def test_view_is_a_flip_of_a_jittered_image_and_undoes_exactly() -> None:
    gen = torch.Generator().manual_seed(5)
    image = torch.randn(3, 2, 8, 6, generator=gen)
    roi = torch.rand(3, 8, 6, generator=gen) > 0.5
    view, view_roi, dims = cons.second_view(image, roi, torch.Generator().manual_seed(1))
    assert dims in cons.FLIPS
    assert torch.equal(torch.flip(view_roi, dims), roi)
    back = torch.flip(view, dims)
    # Per slice and sequence the view is gain * x + bias + noise: a least-squares fit of
    # back on image recovers a gain near 1 and residuals of about NOISE_SD.
    x = image.reshape(6, -1)
    y = back.reshape(6, -1)
    xc, yc = x - x.mean(1, keepdim=True), y - y.mean(1, keepdim=True)
    gain = (xc * yc).sum(1) / (xc * xc).sum(1)
    resid = yc - gain[:, None] * xc
    assert bool(((gain - 1).abs() < 0.5).all())
    assert float(resid.std()) == pytest.approx(cons.NOISE_SD, rel=0.3)
    again = cons.second_view(image, roi, torch.Generator().manual_seed(1))
    assert torch.equal(again[0], view) and again[2] == dims  # seeded


@pytest.fixture(scope="module")
def batch(phantom_volumes):  # noqa: ANN001, ANN201
    return make_batch(phantom_volumes, crop_size=(64, 64), require_labels=True)


def _epoch(batch, weight: float) -> float:  # noqa: ANN001
    torch.manual_seed(0)
    net = UNet(3, n_classes=4, depth=2, base_filters=4)
    opt = torch.optim.SGD(net.parameters(), lr=0.0)
    _, loss = train_mod._run_epoch(
        net, opt, batch.image[:3].float(), batch.roi[:3].bool(), model="deepsvg", lam=0.0,
        mu=None, batch_size=3, penalty="batch", clip_norm=None, generator_seed=0,
        aug_cfg=None, dev=torch.device("cpu"), consistency_weight=weight)
    return loss / 3


def test_training_loss_adds_weight_times_the_term(batch) -> None:  # noqa: ANN001
    """The loss grows by weight x the term, and the term is reproduced by hand from the
    same generator draws (the view is drawn after the mini-batch order)."""
    base = _epoch(batch, 0.0)
    with_term = _epoch(batch, 2.0)
    torch.manual_seed(0)
    net = UNet(3, n_classes=4, depth=2, base_filters=4).train()
    gen = torch.Generator().manual_seed(0)
    order = torch.randperm(3, generator=gen)
    img, roi = batch.image[:3].float()[order], batch.roi[:3].bool()[order]
    view, view_roi, dims = cons.second_view(img, roi, gen)
    with torch.no_grad():
        lp = torch.log_softmax(net(img), dim=1)
        lq = torch.log_softmax(torch.flip(net(view), dims), dim=1)
    term = float(cons.consistency_loss(lp, lq, roi).mean())
    assert term > 1e-4
    assert with_term == pytest.approx(base + 2.0 * term, rel=1e-4)


def test_consistency_run_records_its_weight_and_resumes_only_with_it(batch, tmp_path) -> None:  # noqa: ANN001
    kw = {"model": "deepsvg", "lam": 1.0, "epochs": 2, "min_epochs": 1, "seed": 1,
          "depth": 2, "base_filters": 4, "progress": False, "device": "cpu"}
    res = train_network(batch, consistency_weight=0.5, run_dir=tmp_path / "r", **kw)
    assert res.config["consistency_weight"] == 0.5
    plain = train_network(batch, **kw)
    assert not torch.equal(next(res.network.parameters()), next(plain.network.parameters()))
    from deepgmm.errors import CheckpointError

    with pytest.raises(CheckpointError, match="consistency_weight"):
        train_network(batch, consistency_weight=0.0, run_dir=tmp_path / "r", resume=True, **kw)


def test_labelled_seed_draws_the_labelled_slices(batch) -> None:  # noqa: ANN001
    from deepgmm.data.mu_data import draw_slices

    kw = {"model": "deepsvg", "lam": 1.0, "epochs": 1, "min_epochs": 1, "seed": 1,
          "depth": 2, "base_filters": 4, "progress": False, "device": "cpu",
          "label_weight": 1.0, "labelled_slices": 4}
    for seed in (42, 7):
        res = train_network(batch, labelled_seed=seed, **kw)
        chosen = draw_slices(len(batch), 4, seed)
        assert res.config["labelled_slices"] == [
            [batch.case_ids[i], int(batch.slice_indices[i])] for i in chosen]
