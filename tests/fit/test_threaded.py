"""The ``"threads"`` mechanism: per-slice networks on worker threads, one core each."""

from __future__ import annotations

import contextlib

import pytest
import torch
from helpers import regions

from deepgmm.errors import InputError
from deepgmm.fit import stacked
from deepgmm.fit.single import fit_slices
from deepgmm.fit.stacked import StackedFit
from deepgmm.fit.threaded import SliceWorkers
from deepgmm.nets.unet import UNet

CONFIG = {"in_channels": 3, "n_classes": 4, "depth": 2, "base_filters": 4}
QUICK = {"net_config": {"depth": 2, "base_filters": 4}, "lr": 1e-2, "progress": False,
         "min_iter": 0}



def _state(n: int) -> StackedFit:
    return StackedFit.from_states([stacked.init_state(CONFIG, 10 + i) for i in range(n)],
                                  torch.device("cpu"))


@pytest.mark.parametrize("n_workers", [1, 2, 3])
def test_a_step_equals_one_network_and_optimiser_per_slice(n_workers: int) -> None:
    # forward on the workers, then backward + clipping + AdamW for slices 0 and 2 only:
    # each must match its own UNet, clip_grad_norm_ and torch.optim.AdamW; slice 1 stays
    state = _state(3)
    before = {k: v.clone() for k, v in state.params.items()}
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    weights = torch.randn(3, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    with SliceWorkers(n_workers) as workers:
        graphs = workers.forward(stacked.template(CONFIG), state.params, x,
                                 contextlib.nullcontext)
        logits = torch.cat([g.logits.detach() for g in graphs])
        # the gradient of sum(weights * logits) with respect to the logits is weights
        workers.backward_step(graphs, weights, [0, 2], state, clip_norm=0.05, lr=1e-2,
                              weight_decay=1e-3)
    assert state.step.tolist() == [1.0, 0.0, 1.0]
    for i in range(3):
        net = UNet(**CONFIG)
        net.load_state_dict({k: v[i] for k, v in before.items()})
        out = net(x[i:i + 1])
        torch.testing.assert_close(logits[i:i + 1], out.detach(), atol=1e-5, rtol=1e-5)
        if i != 1:
            (out * weights[i:i + 1]).sum().backward()
            norm = torch.nn.utils.clip_grad_norm_(net.parameters(), 0.05)
            assert norm > 0.05  # the clipping was active
            torch.optim.AdamW(net.parameters(), lr=1e-2, weight_decay=1e-3).step()
        for name, p in net.named_parameters():
            torch.testing.assert_close(state.params[name][i], p.detach(), atol=1e-6,
                                       rtol=1e-5, msg=f"slice {i} {name}")


def test_workers_leave_the_callers_thread_count_alone(two_torch_threads: None) -> None:
    state = _state(2)
    with SliceWorkers(2) as workers:
        workers.forward(stacked.template(CONFIG), state.params, torch.randn(2, 3, 16, 16),
                        contextlib.nullcontext)
    assert torch.get_num_threads() == 2


def test_threads_fit_matches_loop_and_is_batch_independent(two_torch_threads: None) -> None:
    batch = regions.region_batch(3, n_regions=4, size=16, seed=5)
    opts = {**QUICK, "max_iter": 12, "min_iter": 3}
    loop = fit_slices(batch, mechanism="loop", **opts)
    threads = fit_slices(batch, mechanism="threads", **opts)
    alone = fit_slices(regions.subset(batch, [2]), mechanism="threads", **opts)
    torch.testing.assert_close(threads.responsibilities, loop.responsibilities, atol=1e-4,
                               rtol=0)
    torch.testing.assert_close(threads.nll, loop.nll, atol=1e-5, rtol=0)
    assert threads.n_iter[2] == alone.n_iter[0]
    torch.testing.assert_close(threads.responsibilities[2:3], alone.responsibilities,
                               atol=1e-4, rtol=0)


def test_threads_fit_with_bf16_recovers_two_regions(two_torch_threads: None) -> None:
    batch = regions.region_batch(3, n_regions=2, size=16, seed=1)
    res = fit_slices(batch, model="deepsvg", mechanism="threads", precision="bf16",
                     net_config={"depth": 2, "base_filters": 8, "n_classes": 2}, lr=1e-2,
                     max_iter=60, progress=False)
    dice = regions.best_dice_two(res.responsibilities, batch.labels)
    assert (dice > 0.95).all(), dice


def test_auto_picks_threads_on_a_multi_threaded_cpu_only(two_torch_threads: None) -> None:
    cpu = torch.device("cpu")
    assert stacked.resolve_mechanism("auto", cpu) == "threads"
    assert stacked.resolve_mechanism("auto", torch.device("cuda")) == "vmap"
    torch.set_num_threads(1)
    assert stacked.resolve_mechanism("auto", cpu) == "vmap"
    assert stacked.resolve_mechanism("auto", cpu, "bf16") == "loop"
    with pytest.raises(InputError, match="'threads' runs on the CPU"):
        stacked.resolve_mechanism("threads", torch.device("cuda"))
