"""The slice scheduler of per-slice fitting: which slices run, when each stops, what it gave.

B slices are fitted with at most ``limit`` networks in memory. Every iteration

1. :meth:`SliceQueue.fill` fills the free places: slices moved aside after an out-of-memory
   error first, then waiting slices with fresh networks;
2. a stepper (:mod:`deepgmm.fit.steppers`) evaluates the running slices; on a CUDA
   out-of-memory error :meth:`SliceQueue.halve` moves half of them aside (``limit`` halves)
   and the iteration is tried again, a single slice that does not fit is a
   :class:`~deepgmm.errors.FitError`;
3. :class:`StoppingRule` decides which slices stop (after more than ``min_iter`` iterations:
   ``|NLL_t - NLL_{t-1}| < tol``, the published rule, or fewer than a fraction
   ``label_tol`` of the ROI pixels changed class over the last ``label_window`` iterations,
   the label-map rule; or ``max_iter``; a non-finite NLL is a ``FitError``);
4. :class:`SliceOutputs` keeps the stopping slices' responsibilities, NLL and means, the
   stepper steps the others, and the stopped slices leave (:meth:`SliceQueue.retire`).

A slice's arithmetic depends only on its own network, image and optimiser state, so its
result does not depend on which other slices share its iterations.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from deepgmm.errors import FitError
from deepgmm.fit.loss import pack_slices
from deepgmm.fit.stacked import StackedFit
from deepgmm.fit.steppers import Evaluation, Stepper
from deepgmm.mixture.likelihood import PackedROI
from deepgmm.options import STOPPING_RULES

__all__ = ["STOPPING_RULES", "RunningSlices", "SliceOutputs", "SliceQueue", "StoppingRule",
           "run_slices"]

log = logging.getLogger(__name__)

Observer = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None]
"""``observe(ids (N,), nll (N,), logits (N, K, H, W))``, called once per iteration."""


class SliceQueue:
    """Waiting, parked (moved aside after an out-of-memory error) and running slices.

    Attributes:
        active: indices of the running slices, in the order of ``state``.
        state: their networks and optimiser state, or None when none runs.
        limit: most slices running at once.
    """

    def __init__(self, n_slices: int, limit: int, fresh: Callable[[list[int]], StackedFit],
                 device: torch.device) -> None:
        self.pending: deque[int] = deque(range(n_slices))
        self.parked: list[tuple[list[int], StackedFit]] = []
        self.active: list[int] = []
        self.state: StackedFit | None = None
        self.limit, self.fresh, self.device = limit, fresh, device

    def busy(self) -> bool:
        """Whether any slice is still waiting, parked or running."""
        return bool(self.pending or self.parked or self.active)

    def fill(self) -> StackedFit:
        """Fill the free places (parked slices first, then new ones); the running state."""
        joins: list[StackedFit] = [] if self.state is None else [self.state]
        while len(self.active) < self.limit and self.parked:
            ids, part = self.parked.pop()
            room = self.limit - len(self.active)
            if len(ids) > room:  # take what fits, leave the rest parked
                rest = torch.arange(room, len(ids), device=self.device)
                self.parked.append((ids[room:], part.select(rest)))
                ids, part = ids[:room], part.select(torch.arange(room, device=self.device))
            self.active += ids
            joins.append(part)
        free = self.limit - len(self.active)
        if free > 0 and self.pending:
            new = [self.pending.popleft() for _ in range(min(free, len(self.pending)))]
            self.active += new
            joins.append(self.fresh(new))
        if len(joins) > 1 or self.state is None:
            self.state = StackedFit.cat(joins)
        return self.state

    def halve(self, err: BaseException, what: str) -> None:
        """Park the second half of the running slices after an out-of-memory error.

        Raises:
            FitError: a single slice (described by ``what``) does not fit.
        """
        assert self.state is not None
        if len(self.active) == 1:
            raise FitError(f"{what} does not fit in the memory of {self.device}; use "
                           "device='cpu' or a smaller net_config",
                           params=("device", "net_config")) from err
        half = len(self.active) // 2
        keep = torch.arange(half, device=self.device)
        away = torch.arange(half, len(self.active), device=self.device)
        self.parked.append((self.active[half:], self.state.select(away)))
        self.state, self.active, self.limit = self.state.select(keep), self.active[:half], half
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        log.warning("out of memory on %s: fitting %d slices at once instead", self.device, half)

    def retire(self, done: torch.Tensor, state: StackedFit | None) -> None:
        """Remove the slices flagged in ``done`` ``(N,)`` bool; ``state``: the others'."""
        self.active = [a for a, stop in zip(self.active, done.tolist(), strict=True) if not stop]
        self.state = state


@dataclass
class RunningSlices:
    """The running slices' images, packed ROI pixels and reference means, gathered once per
    set of running slices from ``image (B, M, H, W)``, ``roi (B, H, W)`` and ``mu_data
    (B, K, M)`` (or None) on the fitting device; a channels-last ``image_all`` gives
    channels-last images."""

    image_all: torch.Tensor
    roi_all: torch.Tensor
    mu_all: torch.Tensor | None
    n_classes: int
    _for: list[int] | None = None
    _cached: tuple[torch.Tensor, PackedROI, torch.Tensor | None] | None = None

    def of(self, active: list[int]) -> tuple[torch.Tensor, PackedROI, torch.Tensor | None]:
        """``(image (N, M, H, W), packed ROI, mu_data (N, K, M) or None)`` of ``active``."""
        if self._for != active:
            index = torch.tensor(active, dtype=torch.int64, device=self.image_all.device)
            image = self.image_all.index_select(0, index)
            if self.image_all.is_contiguous(memory_format=torch.channels_last):
                image = image.contiguous(memory_format=torch.channels_last)
            packed = pack_slices(image, self.roi_all.index_select(0, index), self.n_classes)
            mu = None if self.mu_all is None else self.mu_all.index_select(0, index)
            self._for, self._cached = list(active), (image, packed, mu)
        assert self._cached is not None
        return self._cached


@dataclass
class StoppingRule:
    """Per-slice stopping after more than ``min_iter`` iterations, or at ``max_iter``.

    ``stop="published"``: ``|NLL_t - NLL_{t-1}| < tol``. ``stop="labels"``: fewer than a
    fraction ``label_tol`` of the slice's ROI pixels (``roi (B, H, W)``) changed class
    (argmax of the logits) in any of the last ``label_window`` iterations; the first
    iteration counts every pixel as changed, so this rule cannot stop a slice before
    iteration ``label_window + 1``.

    Attributes:
        n_iter: ``(B,)`` iterations run per slice.
        prev_nll: ``(B,)`` float64 NLL of each slice's last iteration.
        prev_labels: ``(B, H, W)`` int64 label map of the last iteration (``stop="labels"``).
        last_change: ``(B, H, W)`` int64 iteration at which each pixel last changed class.
    """

    n_slices: int
    tol: float
    min_iter: int
    max_iter: int
    describe: Callable[[int], str]
    lr: float
    stop: str = "published"
    label_tol: float = 1e-3
    label_window: int = 5
    roi: torch.Tensor | None = None
    n_iter: torch.Tensor = field(init=False)
    prev_nll: torch.Tensor = field(init=False)
    prev_labels: torch.Tensor | None = field(init=False, default=None)
    last_change: torch.Tensor | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.stop not in STOPPING_RULES:
            raise ValueError(f"stop must be one of {STOPPING_RULES}, got {self.stop!r}")
        self.n_iter = torch.zeros(self.n_slices, dtype=torch.int64)
        self.prev_nll = torch.full((self.n_slices,), float("inf"), dtype=torch.float64)
        if self.stop == "labels":
            if self.roi is None:
                raise ValueError("the label-map rule needs the slices' roi")
            shape = (self.n_slices, *self.roi.shape[1:])
            self.prev_labels = torch.full(shape, -1, dtype=torch.int64)
            self.last_change = torch.zeros(shape, dtype=torch.int64)

    def update(self, ids: torch.Tensor, nll: torch.Tensor,
               labels: torch.Tensor | None = None) -> torch.Tensor:
        """Count an iteration of slices ``ids`` ``(N,)`` with NLL ``nll`` ``(N,)`` float64
        on the CPU and (``stop="labels"``) label maps ``labels (N, H, W)``; ``(N,)`` bool,
        which stop.

        Raises:
            FitError: a non-finite NLL (the fit diverged).
        """
        if not torch.isfinite(nll).all():
            i = int(ids[int((~torch.isfinite(nll)).nonzero()[0, 0])])
            raise FitError(f"{self.describe(i)}: the NLL became non-finite at iteration "
                           f"{int(self.n_iter[i]) + 1} (lr {self.lr}); try a lower lr or "
                           "clip_norm", params=("lr", "clip_norm"))
        self.n_iter[ids] += 1
        n_iter = self.n_iter[ids]
        if self.stop == "labels":
            converged = self.changed_fraction(ids, labels) < self.label_tol
        else:
            converged = (nll - self.prev_nll[ids]).abs() < self.tol
        self.prev_nll[ids] = nll
        return ((n_iter > self.min_iter) & converged) | (n_iter >= self.max_iter)

    def changed_fraction(self, ids: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """``(N,)`` fraction of each slice's ROI pixels whose class changed in one of the
        last ``label_window`` iterations, after recording ``labels (N, H, W)``."""
        assert self.prev_labels is not None and self.last_change is not None
        assert self.roi is not None and labels is not None
        labels = labels.to("cpu", torch.int64)
        changed = labels != self.prev_labels[ids]
        now = self.n_iter[ids].reshape(-1, 1, 1)
        last = torch.where(changed, now, self.last_change[ids])
        self.last_change[ids], self.prev_labels[ids] = last, labels
        roi = self.roi[ids]
        recent = ((last > now - self.label_window) & roi).sum(dim=(1, 2))
        return recent.double() / roi.sum(dim=(1, 2)).clamp(min=1).double()


@dataclass
class SliceOutputs:
    """What each slice gave at its last iteration, filled as slices stop (CPU tensors).

    Attributes:
        responsibilities: ``(B, K, H, W)`` softmax of the final logits.
        nll: ``(B,)`` float64 final NLL without the penalty.
        means: ``(B, K, M)`` final class means.
        seconds: ``(B,)`` float64, each iteration's time shared among its slices.
    """

    responsibilities: torch.Tensor
    nll: torch.Tensor
    means: torch.Tensor
    seconds: torch.Tensor

    @classmethod
    def empty(cls, b: int, k: int, m: int, h: int, w: int) -> SliceOutputs:
        return cls(torch.zeros(b, k, h, w, dtype=torch.float32),
                   torch.zeros(b, dtype=torch.float64), torch.zeros(b, k, m, dtype=torch.float32),
                   torch.zeros(b, dtype=torch.float64))

    def record(self, ids: torch.Tensor, done: torch.Tensor, evaluation: Evaluation,
               nll: torch.Tensor) -> None:
        """Keep the results of the slices flagged in ``done`` (positions in ``ids``)."""
        if not done.any():
            return
        d = done.nonzero()[:, 0]
        d_dev = d.to(evaluation.logits.device)
        logits = evaluation.logits.detach().index_select(0, d_dev)
        self.responsibilities[ids[d]] = logits.softmax(dim=1).cpu()
        self.nll[ids[d]] = nll[d]
        self.means[ids[d]] = evaluation.mixture.means.detach().index_select(0, d_dev).float().cpu()


def run_slices(queue: SliceQueue, stepper: Stepper, data: RunningSlices, rule: StoppingRule,
               outputs: SliceOutputs, *, size: Sequence[int], progress: bool,
               desc: str, observe: Observer | None = None) -> None:
    """Fit every slice of ``queue`` to its stopping rule, filling ``outputs``;
    ``observe(ids, nll, logits)`` is told every iteration's slice indices ``(N,)``, NLL
    ``(N,)`` float64 and detached logits ``(N, K, H, W)``, before the stopping decision."""
    bar = tqdm(total=len(queue.pending), disable=not progress, desc=desc, unit="slice")
    try:
        while queue.busy():
            t0 = time.perf_counter()
            state = queue.fill()
            image, packed, mu = data.of(queue.active)
            try:
                evaluation = stepper.evaluate(state, image, packed, mu)
            except torch.cuda.OutOfMemoryError as err:
                queue.halve(err, f"one slice of {size[0]} x {size[1]} pixels")
                continue
            ids = torch.tensor(queue.active, dtype=torch.int64)
            nll = evaluation.nll.detach().to("cpu", torch.float64)
            if observe is not None:
                observe(ids, nll, evaluation.logits.detach())
            labels = evaluation.logits.detach().argmax(dim=1) if rule.stop == "labels" else None
            done = rule.update(ids, nll, labels)
            outputs.record(ids, done, evaluation, nll)
            go_on = (~done).nonzero()[:, 0]
            queue.retire(done, stepper.step(state, evaluation, go_on) if len(go_on) else None)
            del evaluation, state
            outputs.seconds[ids] += (time.perf_counter() - t0) / len(ids)
            bar.update(int(done.sum()))
    finally:
        bar.close()
        stepper.close()
