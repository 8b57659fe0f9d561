"""Label maps that maximise each class's expected Dice instead of the pixel accuracy.

Labelling every pixel with its most likely class (argmax) is the Bayes decision for the
number of wrong pixels. Segmentations are judged by Dice, which weighs a small class's
errors more: a pixel that is edema with probability 0.4 and myocardium with 0.6 costs the
large myocardium little when given to edema, and may gain the small edema much. The Bayes
decision for a sum of Dice scores labels small uncertain classes more generously than
argmax does (Lipton, Elkan & Naryanaswamy 2014: the F1-optimal threshold on a calibrated
probability is half the optimal F1; Nowozin 2014 for intersection over union).

With ``p[i, k]`` the probability that pixel ``i`` of a slice is class ``k``, ``P_k = sum_i
p[i, k]`` the class's expected size and ``S_k`` the pixels labelled ``k``, the expected
Dice of class ``k`` is taken as the ratio of expectations

    D_k = 2 sum_{i in S_k} p[i, k] / (|S_k| + P_k),

and :func:`expected_dice_labels` maximises ``sum_k D_k`` over the labellings of each slice by
ascent from argmax. Moving pixel ``i`` into class ``k`` changes ``D_k`` by about
``(2 p[i, k] - D_k) / (|S_k| + P_k)`` (the derivative in ``|S_k|``), so each step proposes
every pixel's class of largest gain under the current sizes and moves the pixels whose gain
improves most, as many as raise the objective (a halving search). Leaving a class out
entirely scores ``prod_i (1 - p[i, k])``, the probability that the class is absent (an empty
label map of an absent class counts as a perfect one): a class more likely absent than found
is dropped, and its pixels go to the other classes, so a slice without scar does not get
some anyway.

The ratio of expectations is the usual approximation of the expected ratio for regions of
many pixels. Written here because neither scikit-learn nor MONAI has a Dice-optimal
decision for probability maps (MONAI's ``AsDiscrete`` is argmax or a fixed threshold).

The decision changes label maps only; the probabilities are not touched. Slices are
independent, and every step works on all of them at once.

Shapes: probabilities ``(B, C, H, W)`` (summing to one over ``C`` inside the mask), mask
``(B, H, W)``.
"""

from __future__ import annotations

import numpy as np

from deepgmm.errors import InputError

__all__ = ["MAX_STEPS", "dice_objective", "expected_dice_labels"]

MAX_STEPS = 100
"""Ascent steps per slice at most; the ascent stops as soon as no slice improves."""

_TINY = 1e-12


def _one_hot(labels: np.ndarray, n_classes: int, mask: np.ndarray) -> np.ndarray:
    """``(B, C, H, W)`` bool: pixel in the mask and labelled ``c``."""
    return (labels[:, None] == np.arange(n_classes)[None, :, None, None]) & mask[:, None]


def _class_dice(probs: np.ndarray, labels: np.ndarray, mask: np.ndarray,
                expected: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(D, n)``: ``(B, C)`` expected Dice ratio of each class's labelled set and its size."""
    chosen = _one_hot(labels, probs.shape[1], mask)
    size = chosen.sum(axis=(2, 3)).astype(np.float64)
    overlap = np.where(chosen, probs, 0.0).sum(axis=(2, 3))
    return 2.0 * overlap / np.maximum(size + expected, _TINY), size


def _absent_probability(probs: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``(B, C)``: ``prod_i (1 - p[i, k])`` over the mask, in log space."""
    log_absent = np.where(mask[:, None], np.log1p(-np.clip(probs, 0.0, 1.0 - 1e-7)), 0.0)
    return np.exp(log_absent.sum(axis=(2, 3)))


def dice_objective(probs: np.ndarray, labels: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``(B,)`` the sum over classes of the expected Dice of ``labels`` (module docstring): a
    class with labelled pixels scores its ratio ``D_k``, a class with none the probability
    that it is absent.

    Args:
        probs: ``(B, C, H, W)`` class probabilities.
        labels: ``(B, H, W)`` class indices ``0 .. C-1`` (read inside the mask only).
        mask: ``(B, H, W)`` bool, the pixels to label.
    """
    probs, mask = _checked(probs, mask)
    expected = np.where(mask[:, None], probs, 0.0).sum(axis=(2, 3))
    return _objective(probs, np.asarray(labels), mask, expected,
                      _absent_probability(probs, mask))


def _objective(probs: np.ndarray, labels: np.ndarray, mask: np.ndarray,
               expected: np.ndarray, absent: np.ndarray) -> np.ndarray:
    """:func:`dice_objective` of checked inputs, the per-slice sums given."""
    dice, size = _class_dice(probs, labels, mask, expected)
    return np.where(size > 0, dice, absent).sum(axis=1)


def _checked(probs: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probs = np.asarray(probs, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    if probs.ndim != 4 or probs.shape[1] < 1:
        raise InputError(f"the expected-Dice decision needs (B, C, H, W) class "
                         f"probabilities, got shape {probs.shape}")
    if mask.shape != (probs.shape[0], *probs.shape[2:]):
        raise InputError(f"mask shape {mask.shape} does not match probabilities "
                         f"{probs.shape}")
    if not np.all(np.isfinite(probs[np.broadcast_to(mask[:, None], probs.shape)])):
        raise InputError("class probabilities must be finite inside the mask")
    return probs, mask


def expected_dice_labels(probs: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The labelling of each slice's mask that maximises the sum of the classes' expected
    Dice (module docstring).

    Args:
        probs: ``(B, C, H, W)`` class probabilities, summing to one over ``C`` inside the
            mask.
        mask: ``(B, H, W)`` bool, the pixels to label.

    Returns:
        ``(B, H, W)`` int64 class indices ``0 .. C-1`` inside the mask, ``-1`` outside. On
        every slice the objective (:func:`dice_objective`) is at least that of argmax.

    Raises:
        InputError: shapes that do not agree, or non-finite probabilities in the mask.
    """
    probs, mask = _checked(probs, mask)
    n_b, n_c = probs.shape[:2]
    expected = np.where(mask[:, None], probs, 0.0).sum(axis=(2, 3))       # (B, C)
    absent = _absent_probability(probs, mask)                              # (B, C)
    allowed = np.ones((n_b, n_c), dtype=bool)
    labels = np.argmax(probs, axis=1)
    for _ in range(n_c):  # drop classes more likely absent than found, at most C rounds
        labels = _ascend(probs, mask, expected, absent, allowed, labels)
        dice, size = _class_dice(probs, labels, mask, expected)
        drop = allowed & (size > 0) & (absent >= dice) & (allowed.sum(axis=1) > 1)[:, None]
        if not drop.any():
            break
        trial_allowed = allowed & ~drop
        trial = _ascend(probs, mask, expected, absent, trial_allowed,
                        _best_allowed(probs, trial_allowed))
        better = (_objective(probs, trial, mask, expected, absent)
                  > _objective(probs, labels, mask, expected, absent))
        if not better.any():
            break
        labels = np.where(better[:, None, None], trial, labels)
        allowed = np.where(better[:, None], trial_allowed, allowed)
    return np.where(mask, labels, -1).astype(np.int64)


def _best_allowed(probs: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """``(B, H, W)`` the most likely allowed class of each pixel."""
    return np.argmax(np.where(allowed[:, :, None, None], probs, -np.inf), axis=1)


def _ascend(probs: np.ndarray, mask: np.ndarray, expected: np.ndarray, absent: np.ndarray,
            allowed: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Coordinate ascent of :func:`dice_objective` from ``labels`` over the allowed classes.

    Each step proposes every pixel's class of largest linearised gain; moving all of them at
    once can overshoot (the sizes the gains assume change with the move), so the step is
    searched along the proposal: the pixels whose gain improves most move first, and the
    share that moves is halved until the objective rises. Each slice keeps its own first
    improving share, or stops.
    """
    n_b = probs.shape[0]
    flat = labels.shape[1] * labels.shape[2]
    score = _objective(probs, labels, mask, expected, absent)
    active = np.ones(n_b, dtype=bool)
    for _ in range(MAX_STEPS):
        dice, size = _class_dice(probs, labels, mask, expected)
        denom = np.maximum(size + expected, _TINY)[:, :, None, None]
        gain = np.where(allowed[:, :, None, None],
                        (2.0 * probs - dice[:, :, None, None]) / denom, -np.inf)
        proposal = np.argmax(gain, axis=1)
        now = np.take_along_axis(gain, labels[:, None], axis=1)[:, 0]
        improvement = np.where((proposal != labels) & mask & active[:, None, None],
                               gain.max(axis=1) - now, -np.inf).reshape(n_b, flat)
        n_changed = np.isfinite(improvement).sum(axis=1)
        if not n_changed.any():
            break
        rank = np.argsort(np.argsort(-improvement, axis=1, kind="stable"), axis=1)
        share = n_changed.astype(np.float64)
        accepted = np.zeros(n_b, dtype=bool)
        while True:
            trying = ~accepted & (share >= 1) & (n_changed > 0)
            if not trying.any():
                break
            moved = (rank < np.ceil(share)[:, None]) & np.isfinite(improvement)
            trial = np.where(moved.reshape(labels.shape) & trying[:, None, None], proposal,
                             labels)
            trial_score = _objective(probs, trial, mask, expected, absent)
            up = trying & (trial_score > score + 1e-12)
            labels = np.where(up[:, None, None], trial, labels)
            score = np.where(up, trial_score, score)
            accepted |= up
            share = np.where(trying & ~up, np.floor(share / 2), share)
        active &= accepted
        if not active.any():
            break
    return labels
