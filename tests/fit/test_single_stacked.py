"""Tests of the stacked networks and the per-slice optimiser against plain PyTorch."""

from __future__ import annotations

import pytest
import torch

from deepgmm.fit import stacked
from deepgmm.fit.adamw import adamw_step_, clip_per_slice_
from deepgmm.fit.stacked import StackedFit
from deepgmm.nets.unet import UNet

CONFIG = {"in_channels": 2, "n_classes": 3, "depth": 2, "base_filters": 4}
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _nets(n: int) -> list[UNet]:
    nets = []
    for i in range(n):
        net = UNet(**CONFIG)
        net.load_state_dict(stacked.init_state(CONFIG, 100 + i))
        nets.append(net)
    return nets


@pytest.mark.parametrize("mechanism", ["loop", "vmap"])
def test_forward_stacked_runs_network_i_on_slice_i(mechanism: str) -> None:
    nets = _nets(3)
    x = torch.randn(3, 2, 16, 16, generator=torch.Generator().manual_seed(0))
    state = StackedFit.from_states([n.state_dict() for n in nets], torch.device("cpu"))
    out = stacked.forward_stacked(stacked.template(CONFIG), state.params, x, mechanism)
    expected = torch.cat([net(x[i:i + 1]) for i, net in enumerate(nets)])
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("max_norm", [0.05, 12.0, None])
def test_per_slice_clip_and_adamw_match_torch(max_norm: float | None) -> None:
    # each slice must behave as its own clip_grad_norm_ + torch.optim.AdamW
    nets = _nets(2)
    ref_opts = [torch.optim.AdamW(n.parameters(), lr=1e-2, weight_decay=1e-3) for n in nets]
    state = StackedFit.from_states([n.state_dict() for n in nets], torch.device("cpu"))
    template = stacked.template(CONFIG)
    gen = torch.Generator().manual_seed(1)
    for _ in range(4):
        x = torch.randn(2, 2, 16, 16, generator=gen)
        # reference: one network, one optimiser per slice
        for i, (net, opt) in enumerate(zip(nets, ref_opts, strict=True)):
            opt.zero_grad()
            net(x[i:i + 1]).square().mean().mul(10.0).backward()
            if max_norm is not None:
                torch.nn.utils.clip_grad_norm_(net.parameters(), max_norm)
            opt.step()
        # stacked
        names = list(state.params)
        leaves = [state.params[k].requires_grad_(True) for k in names]
        out = stacked.forward_stacked(template, state.params, x, "loop")
        loss = out.square().mean(dim=(1, 2, 3)).mul(10.0).sum()
        grads = dict(zip(names, torch.autograd.grad(loss, leaves), strict=True))
        for leaf in leaves:
            leaf.requires_grad_(False)
        norms = clip_per_slice_(grads, max_norm)
        assert norms.shape == (2,)
        adamw_step_(state, grads, lr=1e-2, weight_decay=1e-3)
    for i, net in enumerate(nets):
        for name, p in net.named_parameters():
            torch.testing.assert_close(state.params[name][i], p.detach(), atol=1e-5,
                                       rtol=1e-4, msg=f"slice {i} {name}")
    assert state.step.tolist() == [4.0, 4.0]


def test_adamw_uses_each_slices_own_step_count() -> None:
    # slice 0 has taken 3 steps before slice 1 joins; the joint step must apply bias
    # corrections for step 4 to slice 0 and step 1 to slice 1, as two torch.optim.AdamW would
    nets = _nets(2)
    ref_opts = [torch.optim.AdamW(n.parameters(), lr=1e-2, weight_decay=1e-3) for n in nets]
    gen = torch.Generator().manual_seed(2)
    shapes = {k: v.shape for k, v in nets[0].named_parameters()}

    def random_grads() -> dict[str, torch.Tensor]:
        return {k: torch.randn(shape, generator=gen) for k, shape in shapes.items()}

    early = StackedFit.from_states([nets[0].state_dict()], torch.device("cpu"))
    for _ in range(3):
        g = random_grads()
        adamw_step_(early, {k: v.unsqueeze(0) for k, v in g.items()}, lr=1e-2, weight_decay=1e-3)
        for name, p in nets[0].named_parameters():
            p.grad = g[name].clone()
        ref_opts[0].step()
    joined = StackedFit.cat([early, StackedFit.from_states([nets[1].state_dict()],
                                                           torch.device("cpu"))])
    g0, g1 = random_grads(), random_grads()
    adamw_step_(joined, {k: torch.stack([g0[k], g1[k]]) for k in shapes},
                lr=1e-2, weight_decay=1e-3)
    for net, opt, g in zip(nets, ref_opts, (g0, g1), strict=True):
        for name, p in net.named_parameters():
            p.grad = g[name].clone()
        opt.step()
    assert joined.step.tolist() == [4.0, 1.0]
    for i, net in enumerate(nets):
        for name, p in net.named_parameters():
            torch.testing.assert_close(joined.params[name][i], p.detach(), atol=1e-6,
                                       rtol=1e-5, msg=f"slice {i} {name}")


def test_clip_uses_each_slices_own_norm() -> None:
    grads = {"a": torch.tensor([[3.0, 0.0], [0.3, 0.0]]), "b": torch.tensor([[4.0], [0.4]])}
    norms = clip_per_slice_(grads, 1.0)
    torch.testing.assert_close(norms, torch.tensor([5.0, 0.5]))
    # slice 0 scaled to norm ~1, slice 1 (norm 0.5 < 1) untouched
    torch.testing.assert_close(grads["a"][0], torch.tensor([0.6, 0.0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(grads["b"][1], torch.tensor([0.4]))


def test_select_and_cat_keep_each_slices_state() -> None:
    states = [stacked.init_state(CONFIG, s) for s in (1, 2, 3)]
    full = StackedFit.from_states(states, torch.device("cpu"))
    full.step += torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    picked = full.select(torch.tensor([2, 0]))
    joined = StackedFit.cat([picked, StackedFit.from_states(states[1:2], torch.device("cpu"))])
    assert len(joined) == 3
    assert joined.step.tolist() == [3.0, 1.0, 0.0]
    for k in states[0]:
        assert torch.equal(joined.params[k][0], states[2][k])
        assert torch.equal(joined.params[k][2], states[1][k])
