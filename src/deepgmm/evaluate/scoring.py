"""Scoring a segmented batch against its ground truth: oracle matching, then Dice and HD95.

This is the evaluation step of a run, kept apart from writing the outputs
(:mod:`deepgmm.report.outputs`): the method's own maps never depend on the truth; only
the matched maps and the metrics computed here do.

- Matching rule ``"none"``: the method's own labels are scored as they are, component k
  as class k + 1 (meaningful when μ_data fixed the class order).
- ``"hungarian"`` / ``"greedy"``: the clusters of every slice are assigned to the classes
  with the ground truth as an oracle (:func:`deepgmm.evaluate.matching.match_clusters`),
  and the relabelled maps are scored.

Label maps come from the probabilities under an anatomy rule (:mod:`deepgmm.anatomy`):
``"none"`` is the most likely class of each pixel; ``"lv"`` and ``"lv-dice"`` impose
one convex blood pool and a smooth wall, and apply wherever the channels are the classes in
order (the matched maps, and the own maps when μ_data fixed the class order).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from deepgmm.anatomy import ANATOMY_RULES, apply_anatomy
from deepgmm.errors import InputError
from deepgmm.evaluate.matching import apply_permutation, check_rule, match_clusters
from deepgmm.evaluate.metrics import assd_per_class, dice_per_class, hd95_per_class
from deepgmm.types import CLASS_NAMES

__all__ = ["BatchScores", "hard_labels", "score_batch"]


def _numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def hard_labels(probs: np.ndarray, roi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Masked probabilities and label map.

    Args:
        probs: ``(B, K, H, W)`` responsibilities (any channel order).
        roi: ``(B, H, W)`` bool.

    Returns:
        ``(B, K, H, W)`` float32 probabilities, 0 outside the ROI, and ``(B, H, W)`` int64
        labels: argmax + 1 inside the ROI, 0 outside.
    """
    probs = np.where(roi[:, None], probs.astype(np.float32, copy=False), np.float32(0.0))
    labels = np.where(roi, np.argmax(probs, axis=1) + 1, 0).astype(np.int64)
    return probs, labels


@dataclass
class BatchScores:
    """What the evaluation of one batch produced.

    Attributes:
        matching: the rule used.
        own_labels: ``(B, H, W)`` int64 label map of the fit as it came out: under the
            anatomy rule when the class order is known, else the most likely cluster.
        anatomy: the anatomy rule the own labels follow (``"none"`` where it could not
            apply).
        perm: ``(B, K)`` cluster per class channel (identity for ``"none"``).
        matched_probs: ``(B, K, H, W)`` float32 class probabilities after matching, 0
            outside the ROI; None for ``"none"`` (the own maps are the scored ones).
        matched_labels: ``(B, H, W)`` int64 class indices after matching; None for
            ``"none"``.
        scored_labels: ``(B, H, W)`` int64 class indices the metrics were computed on.
        dice: ``(B, C)`` Dice per slice and class; None without ground truth.
        hd95: ``(B, C)`` HD95 in mm; None without ground truth.
        assd: ``(B, C)`` average symmetric surface distance in mm; None without ground
            truth.
    """

    matching: str
    own_labels: np.ndarray
    anatomy: str
    perm: np.ndarray
    matched_probs: np.ndarray | None
    matched_labels: np.ndarray | None
    scored_labels: np.ndarray
    dice: np.ndarray | None
    hd95: np.ndarray | None
    assd: np.ndarray | None = None


def score_batch(resp: torch.Tensor | np.ndarray, roi: torch.Tensor | np.ndarray,
                truth: torch.Tensor | np.ndarray | None, spacing: np.ndarray | None,
                matching: str, *, anatomy: str = "none", class_identity: bool = False,
                metrics: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
                predicted_roi: bool = False) -> BatchScores:
    """Match (when asked) and score the responsibilities of a batch.

    Args:
        resp: ``(B, K, H, W)`` responsibilities of the fitted components, K = 4.
        roi: ``(B, H, W)`` bool.
        truth: ``(B, H, W)`` integer class indices 0..4, or None (no metrics; only
            ``"none"`` is then possible).
        spacing: ``(B, 2)`` in-plane spacing in mm for HD95 (None: 1 mm).
        matching: ``"hungarian"``, ``"greedy"`` or ``"none"``.
        anatomy: ``"none"``, ``"lv"`` or ``"lv-dice"`` (:mod:`deepgmm.anatomy`), for the
            matched labels and, with ``class_identity``, the own labels.
        class_identity: the components are the classes in order (μ_data fixed it).
        metrics: the batch's ``(dice, hd95, assd)``, each ``(B, C)``, when they were
            computed before from the same responsibilities, truth, matching and anatomy
            rule (a per-case run's merge joins its cases' own; every metric is per slice);
            they are used as given instead of being computed again. Only the matching is
            redone.
        predicted_roi: the ROI is a prediction (``--roi auto``): the LV rules leave blood
            apart from the cavity out of the LV (:func:`deepgmm.anatomy.anatomical_labels`).

    Returns:
        :class:`BatchScores`.

    Raises:
        InputError: unknown rule, or a matching rule without ground truth.
    """
    check_rule(matching)
    if anatomy not in ANATOMY_RULES:
        raise InputError(f"anatomy must be one of {', '.join(ANATOMY_RULES)}, got "
                         f"{anatomy!r}", params=("anatomy",))
    if matching != "none" and truth is None:
        raise InputError(f"matching {matching!r} needs ground-truth labels, but the input "
                         "has none; use matching 'none'")
    roi_np = _numpy(roi).astype(bool)
    resp_np = _numpy(resp).astype(np.float32, copy=False)
    truth_np = None if truth is None else _numpy(truth).astype(np.int64)
    perm = match_clusters(resp_np, truth_np, roi_np, matching)
    spacing_np = None if spacing is None else np.asarray(spacing, dtype=np.float64)
    own_rule = anatomy if class_identity and resp_np.shape[1] == 4 else "none"
    own_labels = apply_anatomy(own_rule, resp_np, roi_np, spacing_np,
                               predicted_roi=predicted_roi)
    matched_probs = matched_labels = None
    scored = own_labels
    if matching != "none":
        matched_probs = hard_labels(apply_permutation(resp_np, perm), roi_np)[0]
        matched_labels = apply_anatomy(anatomy, matched_probs, roi_np, spacing_np,
                                       predicted_roi=predicted_roi)
        scored = matched_labels
    dice = hd95 = assd = None
    if truth_np is not None and metrics is not None:
        dice, hd95, assd = (np.asarray(m, dtype=np.float64) for m in metrics)
        if not dice.shape == hd95.shape == assd.shape == (len(roi_np), len(CLASS_NAMES)):
            raise InputError(f"precomputed metrics of shapes {dice.shape}, {hd95.shape}, "
                             f"{assd.shape} do not fit the batch: expected (B, C) = "
                             f"{(len(roi_np), len(CLASS_NAMES))}")
    elif truth_np is not None:
        dice = dice_per_class(scored, truth_np)
        hd95 = hd95_per_class(scored, truth_np, spacing)
        assd = assd_per_class(scored, truth_np, spacing)
    return BatchScores(matching=matching, own_labels=own_labels,
                       anatomy=anatomy if matching != "none" else own_rule, perm=perm,
                       matched_probs=matched_probs,
                       matched_labels=matched_labels, scored_labels=scored, dice=dice,
                       hd95=hd95, assd=assd)
