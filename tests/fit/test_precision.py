"""bfloat16 networks: the autocast switch, the mechanism it picks, and fits that still work."""

from __future__ import annotations

import pytest
import torch
from helpers import regions

from deepgmm.errors import InputError
from deepgmm.fit import stacked
from deepgmm.fit.precision import network_autocast
from deepgmm.fit.single import fit_slices

TINY = {"depth": 2, "base_filters": 4}
QUICK = {"net_config": TINY, "lr": 1e-2, "progress": False, "min_iter": 0}
CPU = torch.device("cpu")
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_fp32_leaves_convolutions_in_float32_and_bf16_runs_them_in_bfloat16() -> None:
    conv = torch.nn.Conv2d(2, 3, 3)
    x = torch.randn(1, 2, 8, 8)
    with network_autocast("fp32", CPU)():
        assert conv(x).dtype == torch.float32
    with network_autocast("bf16", CPU)():
        out = conv(x)
    assert out.dtype == torch.bfloat16
    # same convolution, to bfloat16's 8-bit mantissa
    torch.testing.assert_close(out.float(), conv(x), atol=0.05, rtol=0.02)


@pytest.mark.parametrize("precision", ["fp16", "float32", ""])
def test_unknown_precision_is_an_input_error(precision: str) -> None:
    with pytest.raises(InputError, match="precision must be one of fp32, bf16"):
        network_autocast(precision, CPU)


def test_auto_mechanism_is_the_loop_for_bf16_on_one_cpu_thread() -> None:
    assert stacked.resolve_mechanism("auto", CPU, "fp32") == "vmap"
    assert stacked.resolve_mechanism("auto", CPU, "bf16") == "loop"
    assert stacked.resolve_mechanism("auto", torch.device("cuda"), "bf16") == "vmap"
    assert stacked.resolve_mechanism("vmap", CPU, "bf16") == "vmap"


@pytest.mark.parametrize("model", ["deepg", "deepsvg"])
def test_bf16_fit_recovers_two_regions(model: str) -> None:
    batch = regions.region_batch(3, n_regions=2, size=16, seed=1)
    res = fit_slices(batch, model=model, net_config={**TINY, "base_filters": 8,
                                                     "n_classes": 2},
                     lr=1e-2, max_iter=60, progress=False, precision="bf16")
    dice = regions.best_dice_two(res.responsibilities, batch.labels)
    assert (dice > 0.95).all(), dice
    assert res.responsibilities.dtype == torch.float32 and res.means.dtype == torch.float32
    assert torch.isfinite(res.nll).all()


def test_bf16_differs_from_fp32_but_stays_close() -> None:
    """bf16 follows fp32 step by step: five iterations move the loss by about 0.03 while
    the two precisions stay about 4e-4 apart (measured), so a tolerance of 2e-3 fails a
    bf16 path that does not step (it would stay at the initial loss)."""
    batch = regions.region_batch(2, n_regions=4, size=16, seed=3)
    opts = {**QUICK, "max_iter": 5, "min_iter": 5}
    full = fit_slices(batch, **opts)
    half = fit_slices(batch, precision="bf16", **opts)
    start = fit_slices(batch, **{**opts, "max_iter": 1, "min_iter": 1})  # the loss unstepped
    atol = 2e-3
    assert ((start.nll - full.nll).abs() > 10 * atol).all()  # the steps move the loss
    assert not torch.equal(half.responsibilities, full.responsibilities)
    torch.testing.assert_close(half.nll, full.nll, atol=atol, rtol=0)


def test_bf16_batched_equals_alone() -> None:
    batch = regions.region_batch(3, n_regions=4, size=16, seed=4)
    opts = {**QUICK, "max_iter": 15, "tol": 1e-3, "min_iter": 3, "precision": "bf16"}
    together = fit_slices(batch, **opts)
    alone = fit_slices(regions.subset(batch, [1]), **opts)
    assert together.n_iter[1] == alone.n_iter[0]
    torch.testing.assert_close(together.responsibilities[1:2], alone.responsibilities,
                               atol=1e-4, rtol=0)


def test_fit_slices_refuses_an_unknown_precision() -> None:
    batch = regions.region_batch(1, n_regions=2, size=16, seed=5)
    with pytest.raises(InputError, match=r"'precision' parameter of fit_slices must be a str "
                       r"among \{'fp32', 'bf16'\}. Got 'half'"):
        fit_slices(batch, precision="half", **QUICK)
