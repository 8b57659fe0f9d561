"""Arithmetic precision of the networks: float32, or bfloat16 under ``torch.autocast``.

With ``"bf16"`` the U-Net's convolutions (forward and backward) run in bfloat16 while the
parameters, the optimiser state, the gradient clipping and the mixture likelihood stay in
float32 (the logits are cast back to float32 before the softmax). It pays off where the
hardware multiplies bfloat16 natively (AVX-512 BF16 or AMX on CPUs, tensor cores on GPUs):
on our 2-core AVX-512 BF16 test machine a per-slice iteration took 0.063 s instead of
0.095 s and a training epoch 3.68 s instead of 5.61 s. bfloat16 keeps 8 bits of mantissa,
so the fits follow a slightly different path and stop at slightly different iterations;
``benchmarks/fit_quality.py --precisions``, ``benchmarks/fit_speed.py --precisions``,
``benchmarks/train_speed.py --bf16`` and ``benchmarks/train_quality.py --precision``
measure what that does to the Dice and the time.

Whether the CPU has bfloat16 instructions is asked of oneDNN
(``torch.ops.mkldnn._is_mkldnn_bf16_supported``, the check PyTorch's own tests use; there
is no public one); without them ``"bf16"`` still works, slowly, with a warning.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

import torch

from deepgmm.errors import InputError

__all__ = ["PRECISIONS", "bf16_is_fast", "network_autocast"]

log = logging.getLogger(__name__)

PRECISIONS: tuple[str, ...] = ("fp32", "bf16")


def bf16_is_fast(device: torch.device) -> bool:
    """Whether ``device`` has bfloat16 arithmetic in hardware (so ``"bf16"`` pays off)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        return bool(torch.backends.mkldnn.is_available()
                    and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def network_autocast(precision: str, device: torch.device
                     ) -> Callable[[], contextlib.AbstractContextManager]:
    """A factory of the context in which to run the networks' forward pass.

    Args:
        precision: ``"fp32"`` or ``"bf16"``.
        device: where the networks run.

    Returns:
        A zero-argument callable giving ``torch.autocast(device.type, torch.bfloat16)`` for
        ``"bf16"`` and a do-nothing context for ``"fp32"``.

    Raises:
        InputError: an unknown precision, or ``"bf16"`` on a device other than cpu / cuda or
            on a GPU without bfloat16.
    """
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        return contextlib.nullcontext
    if device.type not in ("cpu", "cuda"):
        raise InputError(f"precision 'bf16' runs on cpu or cuda, not on {device}")
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise InputError(f"precision 'bf16': {device} has no bfloat16 support; use 'fp32'")
    if not bf16_is_fast(device):
        log.warning("precision 'bf16' on %s without bfloat16 hardware: expect it to be slower "
                    "than 'fp32'", device)
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
