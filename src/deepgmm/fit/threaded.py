"""N per-slice networks run on worker threads, one CPU core each (the ``"threads"`` mechanism).

One U-Net step on one 160 x 160 slice uses two CPU cores poorly: most of the network's
levels are too small to split well between threads. Running two slices at once, each on
its own core with one thread, keeps both cores busy with whole convolutions instead. On
our 2-core test machine (``benchmarks/fit_speed.py --sizes 8 --max-iter 31 --mechanisms
threads vmap loop --precisions bf16 fp32``) a slice-iteration took 0.063 s against 0.090 s
for the plain loop on two threads in bfloat16, and 0.095 s against 0.118 s in float32.

A step is split in three so that the mixture loss stays in one place:

1. :meth:`SliceWorkers.forward`: on the workers, each slice's network forward pass from
   per-slice leaf tensors (detached views of the stacked parameters), keeping its graph;
2. the caller (:class:`deepgmm.fit.steppers.ThreadStepper`) computes the loss of all slices
   from the concatenated logits (a fresh leaf), its gradient with respect to them, which is
   cheap, and the scheduler decides which slices stop here;
3. :meth:`SliceWorkers.backward_step`: on the workers, for each slice that goes on, its
   backward pass from its share of that gradient, its gradient clipping and its AdamW step
   on its views of the stacked parameters. Gradients are never stacked, the optimiser's
   memory-bound passes run on both cores, and a stopping slice skips its backward pass.

PyTorch releases the GIL inside its operators and runs CPU backward passes in the calling
thread, so the workers run truly in parallel. The number of intra-op threads is per thread:
each worker sets its own to one and the caller's setting is untouched. A slice's arithmetic
does not depend on which worker ran it or on the other slices, so batch independence holds.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from types import TracebackType

import torch
from torch.func import functional_call

from deepgmm.fit.adamw import clip_one_slice_, fused_adamw_
from deepgmm.fit.stacked import StackedFit
from deepgmm.nets.unet import UNet

__all__ = ["SliceGraph", "SliceWorkers"]


@dataclass
class SliceGraph:
    """One slice's forward pass: its parameter leaves and its logits ``(1, K, H, W)``."""

    leaves: dict[str, torch.Tensor]
    logits: torch.Tensor


class SliceWorkers:
    """A pool of ``n_workers`` threads, each with one intra-op thread.

    Use as a context manager (the threads end on exit).
    """

    def __init__(self, n_workers: int) -> None:
        if n_workers < 1:
            raise ValueError(f"n_workers must be >= 1, got {n_workers}")
        self.n_workers = n_workers
        self._pool = ThreadPoolExecutor(n_workers, thread_name_prefix="deepgmm-slice",
                                        initializer=torch.set_num_threads, initargs=(1,))
        self._nets: tuple[UNet, list[UNet]] | None = None

    def __enter__(self) -> SliceWorkers:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Stop the threads."""
        self._pool.shutdown(wait=True)

    def _copies(self, net: UNet) -> list[UNet]:
        """One copy of ``net`` per worker: ``functional_call`` swaps a module's parameters
        while it runs, so two threads must not share one module."""
        if self._nets is None or self._nets[0] is not net:
            self._nets = (net, [copy.deepcopy(net) for _ in range(self.n_workers)])
        return self._nets[1]

    def _run(self, task: Callable[[int, list[int]], None], slices: list[int]) -> None:
        """``task(w, its_slices)`` on worker w, the ``slices`` dealt round robin; waits for
        all and re-raises the first error."""
        k = min(self.n_workers, len(slices))
        futures = [self._pool.submit(task, w, slices[w::k]) for w in range(k)]
        for future in futures:
            future.result()

    def forward(self, net: UNet, params: Mapping[str, torch.Tensor], x: torch.Tensor,
                autocast: Callable[[], AbstractContextManager]) -> list[SliceGraph]:
        """Forward pass of network i on slice i, with graphs for :meth:`backward_step`.

        Args:
            net: the architecture (its own parameters are not used).
            params: name -> ``(N, *shape)`` stacked parameters.
            x: ``(N, C, H, W)`` input slices.
            autocast: factory of the precision context, entered on each worker (autocast
                state is per thread).

        Returns:
            N :class:`SliceGraph`, in slice order.
        """
        n = int(x.shape[0])
        graphs: list[SliceGraph | None] = [None] * n

        modules = self._copies(net)

        def run(worker: int, indices: list[int]) -> None:
            module = modules[worker]
            with torch.enable_grad(), autocast():
                for i in indices:
                    leaves = {k: v[i].detach().requires_grad_(True) for k, v in params.items()}
                    logits = functional_call(module, leaves, (x[i:i + 1],))
                    graphs[i] = SliceGraph(leaves, logits)

        self._run(run, list(range(n)))
        return graphs  # type: ignore[return-value]

    def backward_step(self, graphs: list[SliceGraph], grad_logits: torch.Tensor,
                      slices: list[int], state: StackedFit, *, clip_norm: float | None,
                      lr: float, weight_decay: float,
                      lr_at: Callable[[int], float] | None = None) -> None:
        """Backward pass, gradient clipping and AdamW step of the slices at ``slices``.

        Each worker takes its slices one after the other: the gradients of slice i from
        ``grad_logits[i]`` ``(K, H, W)``, clipped to ``clip_norm`` over that slice's
        parameters, then one AdamW step on slice i's views of ``state`` (in place; its step
        count goes up by one; its learning rate is ``lr_at(step count)`` when given). The
        other slices of ``graphs`` are left alone.
        """
        names = list(graphs[0].leaves)
        index = torch.tensor(slices, dtype=torch.int64)
        state.step[index] += 1
        steps = state.step.to(torch.float32)
        counts = [int(c) for c in state.step.tolist()]

        def run(_worker: int, indices: list[int]) -> None:
            for i in indices:
                g = graphs[i]
                grads = list(torch.autograd.grad(
                    g.logits, [g.leaves[k] for k in names],
                    grad_outputs=grad_logits[i:i + 1].to(g.logits.dtype)))
                clip_one_slice_(grads, clip_norm)
                fused_adamw_([state.params[k][i] for k in names], grads,
                             [state.exp_avg[k][i] for k in names],
                             [state.exp_avg_sq[k][i] for k in names],
                             [steps[i]] * len(names),
                             lr=lr if lr_at is None else lr_at(counts[i]),
                             weight_decay=weight_decay)

        self._run(run, slices)
