"""Keep the memory of large CPU tensors in the process between uses (glibc only).

glibc's ``malloc`` serves large blocks (above 128 KiB, a threshold that adapts up to 32 MiB)
with fresh ``mmap`` pages and gives freed memory at the top of the heap back to the system.
A U-Net step on CPU allocates and frees many activations and gradients of a few MiB each, so
the kernel keeps mapping fresh pages and zero-filling them on first touch (one page fault
per 4 KiB). Serving those blocks from the heap and keeping freed memory for reuse removes
that work: one deepG step on 8 slices of 160 x 160 took 0.115 s per slice instead of 0.168 s
on our 2-core test machine, with identical results (``benchmarks/allocator_speed.py``). This is
what PyTorch's CPU performance advice gets by preloading jemalloc or tcmalloc; ``mallopt``
gives the same effect without a second allocator.

The cost is memory: up to ``threshold`` bytes of freed heap stay with the process instead
of going back to the system. The fitting functions and the command line call
:func:`tune_cpu_allocator` when they run on the CPU; set ``DEEPGMM_MALLOC_TUNING=0`` to keep
glibc's defaults.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform

logger = logging.getLogger(__name__)

ENV_SWITCH = "DEEPGMM_MALLOC_TUNING"
"""Environment variable; ``0`` turns the tuning off."""

DEFAULT_THRESHOLD = 1 << 30
"""Blocks up to 1 GiB come from the heap; up to 1 GiB of freed heap is kept."""

_M_TRIM_THRESHOLD = -1  # glibc <malloc.h> parameter numbers
_M_MMAP_THRESHOLD = -3

_applied: int | None = None


def tune_cpu_allocator(threshold: int = DEFAULT_THRESHOLD) -> bool:
    """Serve blocks up to ``threshold`` bytes from the heap and keep up to ``threshold``
    bytes of freed heap (glibc ``mallopt``); idempotent.

    Args:
        threshold: bytes, > 0.

    Returns:
        True when the settings are in effect (glibc, not switched off by
        ``DEEPGMM_MALLOC_TUNING=0``), False otherwise (other C libraries: nothing changes).
    """
    global _applied
    if threshold <= 0:
        raise ValueError(f"threshold must be > 0 bytes, got {threshold}")
    if os.environ.get(ENV_SWITCH, "1").strip() == "0":
        return False
    if _applied == threshold:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    value = min(int(threshold), 2**31 - 1)
    ok = mallopt(_M_MMAP_THRESHOLD, value) == 1 and mallopt(_M_TRIM_THRESHOLD, value) == 1
    if ok:
        _applied = threshold
        logger.debug("malloc: mmap and trim thresholds set to %d bytes", value)
    return ok
