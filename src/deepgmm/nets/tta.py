"""Test-time augmentation: a network's class probabilities averaged over image symmetries.

A trained network is applied to every transformed copy of the image — the symmetries of the
square: quarter turns, each with and without a mirror (8 for square crops; for other crops
the 4 that keep the shape: identity, the two mirrors and the half turn) — each answer is
transformed back, and the class probabilities are averaged. Training with rotations and
flips (:mod:`deepgmm.data.augment`) makes these copies plausible inputs, and the average
removes the part of a prediction that depends on the image's orientation.

The group is deterministic and exactly invertible (``torch.rot90`` / ``torch.flip``), so no
random transform has to be recorded and undone, as MONAI's ``TestTimeAugmentation`` does.

A transform is ``(quarter_turns, mirror)``: turn the last two axes ``quarter_turns`` times
by 90 degrees (``torch.rot90``), then mirror the last axis when ``mirror`` is true.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from deepgmm.errors import InputError

Transform = tuple[int, bool]
"""``(quarter_turns, mirror)``: quarter turns 0..3 of the last two axes, then a mirror of the
last axis."""

PLAIN: tuple[Transform, ...] = ((0, False),)
"""The identity alone: :func:`averaged_log_softmax` is then the plain forward pass."""


def symmetries(height: int, width: int) -> tuple[Transform, ...]:
    """The image symmetries used for a ``height x width`` crop.

    Returns:
        8 transforms (all quarter turns, with and without a mirror) for a square crop, 4 (no
        quarter or three-quarter turns, which would swap H and W) otherwise; the identity
        ``(0, False)`` first.
    """
    turns = (0, 1, 2, 3) if height == width else (0, 2)
    return tuple((k, mirror) for k in turns for mirror in (False, True))


def apply_transform(x: torch.Tensor, transform: Transform) -> torch.Tensor:
    """``x (..., H, W)`` turned, then mirrored, as ``transform`` says."""
    turns, mirror = transform
    y = torch.rot90(x, turns, dims=(-2, -1)) if turns % 4 else x
    return y.flip(-1) if mirror else y


def invert_transform(y: torch.Tensor, transform: Transform) -> torch.Tensor:
    """The inverse of :func:`apply_transform`: ``invert(apply(x, t), t) == x``."""
    turns, mirror = transform
    x = y.flip(-1) if mirror else y
    return torch.rot90(x, -turns, dims=(-2, -1)) if turns % 4 else x


def averaged_log_softmax(network: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor,
                         transforms: tuple[Transform, ...] | None = None) -> torch.Tensor:
    """Log of the network's class probabilities averaged over image symmetries.

    Args:
        network: maps ``(B, M, H, W)`` to ``(B, K, H, W)`` logits (a module or any
            callable).
        image: ``(B, M, H, W)``.
        transforms: the symmetries to average over (default: :func:`symmetries` of the
            crop; :data:`PLAIN` is the plain forward pass).

    Returns:
        ``(B, K, H, W)`` log of the mean of the back-transformed softmax outputs.
    """
    if transforms is None:
        transforms = symmetries(int(image.shape[-2]), int(image.shape[-1]))
    if not transforms:
        raise InputError("test-time augmentation needs at least one transform")
    total: torch.Tensor | None = None
    for transform in transforms:  # one forward pass per symmetry (8 at most)
        logits = network(apply_transform(image, transform))
        log_prob = invert_transform(torch.log_softmax(logits, dim=1), transform)
        total = log_prob if total is None else torch.logaddexp(total, log_prob)
    return total - math.log(len(transforms))  # type: ignore[operator]
