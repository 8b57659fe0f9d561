"""glibc malloc tuning: applied where possible, switchable, idempotent."""

from __future__ import annotations

import platform

import pytest

from deepgmm import allocator

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def test_switched_off_by_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(allocator.ENV_SWITCH, "0")
    assert allocator.tune_cpu_allocator() is False


@pytest.mark.skipif(not GLIBC, reason="mallopt tuning needs glibc on Linux")
def test_applied_on_glibc_and_idempotent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(allocator.ENV_SWITCH, raising=False)
    assert allocator.tune_cpu_allocator() is True
    assert allocator.tune_cpu_allocator() is True
    assert allocator._applied == allocator.DEFAULT_THRESHOLD


def test_bad_threshold_refused() -> None:
    with pytest.raises(ValueError, match="threshold must be > 0"):
        allocator.tune_cpu_allocator(0)
