"""One iteration of N per-slice networks, one stepper per mechanism (loop / vmap / threads).

A stepper does the arithmetic of an iteration of per-slice fitting in two halves, so that
the scheduler (:mod:`deepgmm.fit.scheduler`) can decide in between which slices stop:

1. :meth:`evaluate`: the networks' forward passes on their slices, the loss
   (:mod:`deepgmm.fit.loss`) and what the backward pass needs; returns an
   :class:`Evaluation` with the logits, the NLL and the mixture parameters of every slice;
2. :meth:`step`: for the slices that go on only, gradient clipping per slice and one AdamW
   step (:mod:`deepgmm.fit.adamw`); returns their :class:`~deepgmm.fit.stacked.StackedFit`.

``LoopStepper`` and ``VmapStepper`` run the N networks on the calling thread
(:func:`deepgmm.fit.stacked.forward_stacked`) and take the gradients of all slices with one
autograd call; ``ThreadStepper`` runs each slice's forward and backward pass on a worker
thread (:mod:`deepgmm.fit.threaded`): the loss is differentiated only with respect to the
logits, and a stopping slice skips its backward pass. All three give the same per-slice
results up to float rounding.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import torch

from deepgmm.fit import stacked
from deepgmm.fit.adamw import adamw_step_, clip_per_slice_
from deepgmm.fit.loss import nll_of_logits, slice_loss
from deepgmm.fit.schedule import LRSchedule
from deepgmm.fit.stacked import StackedFit
from deepgmm.fit.threaded import SliceGraph, SliceWorkers
from deepgmm.mixture.likelihood import MixtureParams, PackedROI
from deepgmm.nets.unet import UNet

__all__ = ["Evaluation", "LoopStepper", "OptimiserSettings", "ThreadStepper", "VmapStepper",
           "make_stepper"]


@dataclass(frozen=True)
class OptimiserSettings:
    """What every stepper needs besides the slices: the model and the AdamW settings
    (``schedule``: a learning-rate schedule by each slice's step count; None: ``lr``
    throughout)."""

    model: str
    lam: float
    lr: float
    weight_decay: float
    clip_norm: float | None
    schedule: LRSchedule | None = None

    def lr_at(self) -> Callable[[int], float] | None:
        """The schedule's ``step -> lr``, or None for the constant ``lr``."""
        return None if self.schedule is None or self.schedule.constant else self.schedule.at


@dataclass
class Evaluation:
    """One iteration's forward pass of N slices.

    Attributes:
        logits: ``(N, K, H, W)`` float32.
        nll: ``(N,)`` NLL without the penalty.
        mixture: the mixture parameters of the closed-form M-step (``means (N, K, M)``).
        backward: what :meth:`step` needs (gradients, or graphs and logit gradients).
    """

    logits: torch.Tensor
    nll: torch.Tensor
    mixture: MixtureParams
    backward: Any = field(repr=False)


class _AutogradStepper:
    """Forward on the calling thread, gradients of all slices with one autograd call."""

    mechanism: str

    def __init__(self, net: UNet, settings: OptimiserSettings,
                 autocast: Callable[[], AbstractContextManager]) -> None:
        self.net, self.settings, self.autocast = net, settings, autocast

    def evaluate(self, state: StackedFit, image: torch.Tensor, packed: PackedROI,
                 mu_data: torch.Tensor | None) -> Evaluation:
        """Forward, loss and the gradients ``name -> (N, *shape)`` of all N slices."""
        names = list(state.params)
        leaves = [state.params[n].requires_grad_(True) for n in names]
        with self.autocast():
            logits = stacked.forward_stacked(self.net, state.params, image, self.mechanism)
        logits = logits.float()
        nll, mix = nll_of_logits(logits, packed, self.settings.model)
        loss = slice_loss(nll, mix.means, lam=self.settings.lam, mu_data=mu_data)
        grads = dict(zip(names, torch.autograd.grad(loss.sum(), leaves), strict=True))
        for leaf in leaves:
            leaf.requires_grad_(False)
        return Evaluation(logits, nll, mix, grads)

    def step(self, state: StackedFit, evaluation: Evaluation,
             go_on: torch.Tensor) -> StackedFit:
        """Clip and step the slices at ``go_on`` (``(n,)`` int64 positions, n >= 1)."""
        grads = evaluation.backward
        if len(go_on) < len(state):
            keep = go_on.to(state.step.device)
            state = state.select(keep)
            grads = {n: g.index_select(0, keep) for n, g in grads.items()}
        clip_per_slice_(grads, self.settings.clip_norm)
        adamw_step_(state, grads, lr=self.settings.lr, weight_decay=self.settings.weight_decay,
                    lr_at=self.settings.lr_at())
        return state

    def close(self) -> None:
        """Nothing to release."""


class LoopStepper(_AutogradStepper):
    """``"loop"``: each network runs on its own slice, one after the other."""

    mechanism = "loop"


class VmapStepper(_AutogradStepper):
    """``"vmap"``: ``torch.func.vmap`` over the stacked parameters (grouped convolutions)."""

    mechanism = "vmap"


class ThreadStepper:
    """``"threads"``: each slice's forward and backward pass on a worker thread (CPU)."""

    def __init__(self, net: UNet, settings: OptimiserSettings,
                 autocast: Callable[[], AbstractContextManager]) -> None:
        self.net, self.settings, self.autocast = net, settings, autocast
        self.workers = SliceWorkers(torch.get_num_threads())

    def evaluate(self, state: StackedFit, image: torch.Tensor, packed: PackedROI,
                 mu_data: torch.Tensor | None) -> Evaluation:
        """Forward on the workers; loss and its gradient with respect to the logits here."""
        graphs: list[SliceGraph] = self.workers.forward(self.net, state.params, image,
                                                        self.autocast)
        logits = torch.cat([g.logits.detach() for g in graphs]).float().requires_grad_(True)
        nll, mix = nll_of_logits(logits, packed, self.settings.model)
        loss = slice_loss(nll, mix.means, lam=self.settings.lam, mu_data=mu_data)
        (grad_logits,) = torch.autograd.grad(loss.sum(), [logits])
        return Evaluation(logits, nll, mix, (graphs, grad_logits))

    def step(self, state: StackedFit, evaluation: Evaluation,
             go_on: torch.Tensor) -> StackedFit:
        """Backward, clip and step the slices at ``go_on`` on the workers."""
        graphs, grad_logits = evaluation.backward
        s = self.settings
        self.workers.backward_step(graphs, grad_logits, go_on.tolist(), state,
                                   clip_norm=s.clip_norm, lr=s.lr, weight_decay=s.weight_decay,
                                   lr_at=s.lr_at())
        return state.select(go_on) if len(go_on) < len(state) else state

    def close(self) -> None:
        """Stop the worker threads."""
        self.workers.close()


Stepper = LoopStepper | VmapStepper | ThreadStepper
_STEPPERS: dict[str, type[Stepper]] = {"loop": LoopStepper, "vmap": VmapStepper,
                                       "threads": ThreadStepper}


def make_stepper(mechanism: str, net: UNet, settings: OptimiserSettings,
                 autocast: Callable[[], AbstractContextManager]) -> Stepper:
    """The stepper of a resolved mechanism (``"loop"``, ``"vmap"`` or ``"threads"``)."""
    return _STEPPERS[mechanism](net, settings, autocast)
