"""N independent U-Nets with their parameters stacked along a leading slice axis.

Every slice of a batch gets its own network; their parameters of the same name are stacked
into one tensor ``(N, *shape)`` so that adding or removing slices is one ``index_select`` /
``cat`` per parameter, and the optimiser (:mod:`deepgmm.fit.adamw`) updates all slices with a
few vectorised operations.

Three ways to run the N networks, same maths and same per-slice results:

- ``"loop"``: the stacked tensors are unbound into per-slice views and each network runs on
  its own slice (``torch.func.functional_call``); one backward pass through the summed
  losses fills all gradients.
- ``"vmap"``: ``torch.func.vmap`` over the stacked parameters (PyTorch turns the batched
  weights into grouped convolutions): fewer, larger kernels.
- ``"threads"`` (CPU only): the slices' networks run on worker threads with one intra-op
  thread each, so each core works on whole convolutions of its own slice
  (:mod:`deepgmm.fit.threaded`).

``"auto"`` picks ``"threads"`` on a CPU with more than one intra-op thread and ``"vmap"``
elsewhere (``"loop"`` for bfloat16 on a single CPU thread, where grouped bfloat16
convolutions are slow). On 2 CPU cores, 8 MyoPS slices at once, 31 iterations
(``benchmarks/fit_speed.py --sizes 8 --max-iter 31 --mechanisms threads vmap loop
--precisions bf16 fp32``), seconds per slice-iteration in bfloat16 0.063 (threads),
0.090 (loop), 0.120 (vmap); in float32 0.095 (threads), 0.110 (vmap), 0.118 (loop). On
GPUs fewer, larger kernels are the point.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch.func import functional_call, vmap

from deepgmm.errors import InputError
from deepgmm.nets.unet import UNet

Mechanism = Literal["auto", "loop", "vmap", "threads"]
MECHANISMS: tuple[str, ...] = ("auto", "loop", "vmap", "threads")


def slice_seed(seed: int, case_id: str, slice_index: int) -> int:
    """A 63-bit seed for one slice's network, derived from ``(seed, case_id, slice_index)``.

    The same slice gets the same initialisation whatever else shares its batch.
    """
    key = f"{int(seed)}\x1f{case_id}\x1f{int(slice_index)}".encode()
    digest = hashlib.blake2b(key, digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def init_state(config: Mapping[str, Any], seed: int) -> dict[str, torch.Tensor]:
    """State dict of a freshly initialised ``UNet(**config)`` drawn with ``seed``.

    PyTorch's default initialisation is used; the global random state is left untouched.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = UNet(**config)
    return {name: p.detach() for name, p in net.named_parameters()}


def template(config: Mapping[str, Any]) -> UNet:
    """A parameter-less (``meta`` device) ``UNet(**config)`` to call functionally."""
    with torch.device("meta"):
        return UNet(**config)


def check_state(state: Mapping[str, torch.Tensor], config: Mapping[str, Any],
                name: str = "init_state") -> None:
    """Raise :class:`InputError` unless ``state`` holds exactly the parameters of
    ``UNet(**config)`` with the same shapes."""
    expected = {k: tuple(p.shape) for k, p in template(config).named_parameters()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    wrong = sorted(k for k in set(expected) & set(got) if expected[k] != got[k])
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {missing[:3]}{' ...' if len(missing) > 3 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:3]}{' ...' if len(unexpected) > 3 else ''}")
        if wrong:
            k = wrong[0]
            parts.append(f"shape of {k} is {got[k]}, expected {expected[k]}")
        raise InputError(f"{name} does not match the network {dict(config)}: "
                         + "; ".join(parts))


@dataclass
class StackedFit:
    """Parameters and AdamW moments of N networks, each tensor ``(N, *param_shape)``.

    Attributes:
        params: name -> ``(N, *shape)`` parameters (leaf tensors).
        exp_avg: name -> ``(N, *shape)`` first moments.
        exp_avg_sq: name -> ``(N, *shape)`` second moments.
        step: ``(N,)`` float64 number of optimiser steps taken by each slice.
    """

    params: dict[str, torch.Tensor]
    exp_avg: dict[str, torch.Tensor]
    exp_avg_sq: dict[str, torch.Tensor]
    step: torch.Tensor

    def __len__(self) -> int:
        return int(self.step.shape[0])

    @classmethod
    def from_states(cls, states: list[Mapping[str, torch.Tensor]],
                    device: torch.device) -> StackedFit:
        """Stack N state dicts (fresh optimiser state) onto ``device``."""
        names = list(states[0])
        params = {k: torch.stack([s[k] for s in states]).to(device=device, dtype=torch.float32)
                  for k in names}
        zeros = {k: torch.zeros_like(v) for k, v in params.items()}
        return cls(params=params, exp_avg=zeros,
                   exp_avg_sq={k: torch.zeros_like(v) for k, v in params.items()},
                   step=torch.zeros(len(states), dtype=torch.float64, device=device))

    @torch.no_grad()
    def select(self, index: torch.Tensor) -> StackedFit:
        """The slices at ``index`` (``(n,)`` int64), copied."""
        def pick(d: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            return {k: v.index_select(0, index) for k, v in d.items()}
        return StackedFit(pick(self.params), pick(self.exp_avg), pick(self.exp_avg_sq),
                          self.step.index_select(0, index))

    @staticmethod
    @torch.no_grad()
    def cat(parts: list[StackedFit]) -> StackedFit:
        """Concatenate along the slice axis (in order)."""
        parts = [p for p in parts if len(p)]
        if len(parts) == 1:
            return parts[0]

        def join(attr: str) -> dict[str, torch.Tensor]:
            first: dict[str, torch.Tensor] = getattr(parts[0], attr)
            return {k: torch.cat([getattr(p, attr)[k] for p in parts]) for k in first}
        return StackedFit(join("params"), join("exp_avg"), join("exp_avg_sq"),
                          torch.cat([p.step for p in parts]))


def resolve_mechanism(mechanism: str, device: torch.device,
                      precision: str = "fp32") -> Literal["loop", "vmap", "threads"]:
    """``"auto"`` -> ``"threads"`` on a CPU with more than one intra-op thread, else
    ``"loop"`` for bfloat16 on CPU and ``"vmap"`` otherwise (see the module docstring);
    validates the name. ``"threads"`` is for CPUs only."""
    if mechanism not in MECHANISMS:
        raise InputError(f"mechanism must be one of {', '.join(MECHANISMS)}, got {mechanism!r}")
    if mechanism == "threads" and device.type != "cpu":
        raise InputError(f"mechanism 'threads' runs on the CPU, not on {device}")
    if mechanism == "auto":
        if device.type == "cpu" and torch.get_num_threads() > 1:
            return "threads"
        return "loop" if device.type == "cpu" and precision == "bf16" else "vmap"
    return mechanism  # type: ignore[return-value]


def forward_stacked(net: UNet, params: Mapping[str, torch.Tensor], x: torch.Tensor,
                    mechanism: Literal["loop", "vmap"]) -> torch.Tensor:
    """Run N networks, network i on slice i.

    Args:
        net: the architecture (a :func:`template`); its own parameters are not used.
        params: name -> ``(N, *shape)`` stacked parameters.
        x: ``(N, C, H, W)`` input slices.
        mechanism: ``"loop"`` or ``"vmap"`` (see the module docstring).

    Returns:
        ``(N, K, H, W)`` logits.
    """
    n = int(x.shape[0])
    if mechanism == "vmap":
        def one(p: dict[str, torch.Tensor], xi: torch.Tensor) -> torch.Tensor:
            return functional_call(net, p, (xi.unsqueeze(0),)).squeeze(0)
        return vmap(one)(dict(params), x)
    views = {k: v.unbind(0) for k, v in params.items()}
    outs = [functional_call(net, {k: v[i] for k, v in views.items()}, (x[i:i + 1],))
            for i in range(n)]
    return torch.cat(outs)
