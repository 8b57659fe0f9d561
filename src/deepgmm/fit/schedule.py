"""The learning-rate schedule of per-slice fitting: constant (published), or warm-up then decay.

Each slice follows the schedule by its own optimiser step count t = 1, 2, ... (slices join a
running batch at different times):

    lr_t = lr * min(1, t / warmup) * 0.5 ** (max(0, t - warmup) / half_life)

``warmup = 0`` skips the linear ramp and ``half_life = 0`` the exponential decay; with both
0 the learning rate is the constant ``lr`` of the published recipe.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LRSchedule"]


@dataclass(frozen=True)
class LRSchedule:
    """Peak learning rate ``lr``, linear warm-up over ``warmup`` steps, then a decay that
    halves the rate every ``half_life`` steps (0: no warm-up / no decay)."""

    lr: float
    warmup: int = 0
    half_life: float = 0.0

    @property
    def constant(self) -> bool:
        """Whether every step uses ``lr`` (no warm-up, no decay)."""
        return self.warmup == 0 and self.half_life == 0

    def at(self, step: int) -> float:
        """The learning rate of optimiser step ``step`` (1 for the first step)."""
        factor = 1.0
        if self.warmup > 0:
            factor = min(1.0, step / self.warmup)
        if self.half_life > 0 and step > self.warmup:
            factor *= 0.5 ** ((step - self.warmup) / self.half_life)
        return self.lr * factor
