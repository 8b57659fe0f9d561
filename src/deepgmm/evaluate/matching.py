"""Label matching: which fitted cluster is which class, decided per slice from the truth.

Without class statistics (``mu_data``) a mixture's components carry no class identity, so
evaluation assigns clusters to classes with the ground truth as an oracle:

- ``"hungarian"``: the assignment that maximises the total Dice over the classes
  (``scipy.optimize.linear_sum_assignment``), the fair version of the oracle;
- ``"greedy"``: the rule of the published code: the cluster with the best Dice for blood
  first, then the best remaining one for myocardium, then for scar; the last cluster is
  edema;
- ``"none"``: identity, component k is class k + 1 (the order fixed by ``mu_data``).

Cluster maps are hard (argmax of the responsibilities) and restricted to the ROI, so the
Dice used for matching is the Dice reported afterwards.

A permutation ``perm`` of shape ``(B, K)`` gives, for slice b and class channel c (class
index c + 1), the cluster ``perm[b, c]`` that becomes that class.
"""

from __future__ import annotations

from typing import Literal, TypeVar

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from deepgmm.errors import InputError
from deepgmm.types import CLASS_NAMES

MatchingRule = Literal["hungarian", "greedy", "none"]
RULES: tuple[str, ...] = ("hungarian", "greedy", "none")

GREEDY_ORDER: tuple[int, ...] = (0, 1, 3)
"""Class channels (blood, myocardium, scar) picked in this order by the greedy rule; the
remaining cluster becomes the last class left (edema)."""

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def _as_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    """A numpy view of an array or a (CPU or GPU) tensor."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def check_rule(rule: str) -> str:
    """Return ``rule`` if it names a matching rule, else raise :class:`InputError`."""
    if rule not in RULES:
        raise InputError(f"matching must be one of {', '.join(RULES)}; got {rule!r}")
    return rule


def cluster_maps(resp_or_labels: np.ndarray | torch.Tensor, roi: np.ndarray | torch.Tensor,
                 n_clusters: int | None = None) -> tuple[np.ndarray, int]:
    """Hard cluster index per pixel, -1 outside the ROI.

    Args:
        resp_or_labels: ``(B, K, H, W)`` responsibilities (argmax over K is taken) or
            ``(B, H, W)`` integer cluster labels 1..K inside the ROI (label-map convention).
        roi: ``(B, H, W)`` bool.
        n_clusters: K for label input (default 4); ignored for responsibilities.

    Returns:
        ``(B, H, W)`` int64 cluster indices 0..K-1 in the ROI, -1 outside, and K.
    """
    x = _as_numpy(resp_or_labels)
    roi_np = _as_numpy(roi).astype(bool)
    if x.ndim == 4:
        n_k = int(x.shape[1])
        clusters = np.argmax(x, axis=1)
        spatial = x.shape[:1] + x.shape[2:]
    elif x.ndim == 3:
        if not np.issubdtype(x.dtype, np.integer):
            raise InputError(f"cluster labels (B, H, W) must be integers, got dtype {x.dtype}")
        n_k = len(CLASS_NAMES) if n_clusters is None else int(n_clusters)
        clusters = x.astype(np.int64) - 1
        spatial = x.shape
        inside = clusters[roi_np]
        if inside.size and (inside.min() < 0 or inside.max() >= n_k):
            raise InputError(f"cluster labels inside the ROI must lie in 1..{n_k}, got "
                             f"{int(inside.min()) + 1}..{int(inside.max()) + 1}")
    else:
        raise InputError("resp_or_labels must be responsibilities (B, K, H, W) or labels "
                         f"(B, H, W), got shape {x.shape}")
    if roi_np.shape != tuple(spatial):
        raise InputError(f"roi {roi_np.shape} does not match the maps' (B, H, W) {spatial}")
    return np.where(roi_np, clusters, -1).astype(np.int64), n_k


def dice_matrix(clusters: np.ndarray, truth: np.ndarray, n_clusters: int,
                n_classes: int = len(CLASS_NAMES)) -> np.ndarray:
    """Dice of every cluster against every class, per slice.

    Args:
        clusters: ``(B, H, W)`` int cluster indices 0..K-1, negative where not assigned.
        truth: ``(B, H, W)`` int true class indices (0 background, classes 1..C).
        n_clusters: K.
        n_classes: C.

    Returns:
        ``(B, K, C)`` float64; 0 where cluster and class are both empty.
    """
    b = clusters.shape[0]
    c_hot = (clusters.reshape(b, 1, -1) == np.arange(n_clusters).reshape(1, -1, 1))
    t_hot = (truth.reshape(b, 1, -1) == np.arange(1, n_classes + 1).reshape(1, -1, 1))
    c_f = c_hot.astype(np.float64)
    t_f = t_hot.astype(np.float64)
    inter = np.matmul(c_f, t_f.transpose(0, 2, 1))                      # (B, K, C)
    total = c_f.sum(axis=2)[:, :, None] + t_f.sum(axis=2)[:, None, :]    # (B, K, C)
    return np.divide(2.0 * inter, total, out=np.zeros_like(inter), where=total > 0)


def _hungarian(dice: np.ndarray) -> np.ndarray:
    """``(B, K, C)`` Dice -> ``(B, C)`` cluster per class maximising the total Dice."""
    perm = np.empty((dice.shape[0], dice.shape[2]), dtype=np.int64)
    for b, d in enumerate(dice):  # one assignment problem per slice (library call)
        rows, cols = linear_sum_assignment(d, maximize=True)
        perm[b, cols] = rows
    return perm


def _greedy(dice: np.ndarray) -> np.ndarray:
    """``(B, K, C)`` Dice -> ``(B, C)`` by the published greedy rule, all slices at once.

    The rule is sequential by definition (each pick removes a cluster), so the three picks
    are a loop of fixed length; every pick is vectorised over the slices. Ties go to the
    lower cluster index.
    """
    n_b, n_k, n_c = dice.shape
    perm = np.empty((n_b, n_c), dtype=np.int64)
    free = np.ones((n_b, n_k), dtype=bool)
    rows = np.arange(n_b)
    for c in GREEDY_ORDER:
        k = np.argmax(np.where(free, dice[:, :, c], -np.inf), axis=1)
        perm[:, c] = k
        free[rows, k] = False
    last = [c for c in range(n_c) if c not in GREEDY_ORDER][0]
    perm[:, last] = np.argmax(free, axis=1)
    return perm


def match_clusters(resp_or_labels: np.ndarray | torch.Tensor,
                   truth: np.ndarray | torch.Tensor | None,
                   roi: np.ndarray | torch.Tensor, rule: str = "hungarian", *,
                   n_clusters: int | None = None) -> np.ndarray:
    """Assign the K clusters of each slice to the 4 classes using the ground truth.

    Args:
        resp_or_labels: ``(B, K, H, W)`` responsibilities or ``(B, H, W)`` integer cluster
            labels 1..K inside the ROI.
        truth: ``(B, H, W)`` integer class indices 0..4; may be None only for ``"none"``.
        roi: ``(B, H, W)`` bool region where clusters are assigned.
        rule: ``"hungarian"`` (maximum total Dice), ``"greedy"`` (published rule) or
            ``"none"`` (identity).
        n_clusters: K for label input (default 4).

    Returns:
        ``(B, K)`` int64 permutation: ``perm[b, c]`` is the cluster that becomes class
        index ``c + 1`` on slice b.

    Raises:
        InputError: unknown rule, K != 4, a matching rule without ground truth, or shapes
            that do not agree.
    """
    check_rule(rule)
    clusters, n_k = cluster_maps(resp_or_labels, roi, n_clusters)
    n_c = len(CLASS_NAMES)
    if n_k != n_c:
        raise InputError(f"label matching needs K = {n_c} clusters (one per class), got {n_k}")
    n_b = clusters.shape[0]
    if rule == "none":
        return np.tile(np.arange(n_k, dtype=np.int64), (n_b, 1))
    if truth is None:
        raise InputError(f"matching {rule!r} needs ground-truth labels; none were given "
                         "(use matching 'none')")
    truth_np = _as_numpy(truth)
    if truth_np.shape != clusters.shape:
        raise InputError(f"truth {truth_np.shape} does not match the maps' (B, H, W) "
                         f"{clusters.shape}")
    dice = dice_matrix(clusters, truth_np.astype(np.int64), n_k, n_c)
    return _hungarian(dice) if rule == "hungarian" else _greedy(dice)


def apply_permutation(resp: ArrayT, perm: np.ndarray | torch.Tensor) -> ArrayT:
    """Reorder the cluster channels into class order.

    Args:
        resp: ``(B, K, H, W)`` responsibilities (numpy array or torch tensor).
        perm: ``(B, K)`` integer, a permutation of 0..K-1 on every row (see
            :func:`match_clusters`).

    Returns:
        ``(B, K, H, W)`` of the same type: channel c of slice b is ``resp[b, perm[b, c]]``.
    """
    perm_np = _as_numpy(perm)
    if resp.ndim != 4 or perm_np.shape != tuple(resp.shape[:2]):
        raise InputError(f"perm must be (B, K) = {tuple(resp.shape[:2])} for responsibilities "
                         f"{tuple(resp.shape)}, got {perm_np.shape}")
    n_k = resp.shape[1]
    if not np.array_equal(np.sort(perm_np, axis=1),
                          np.broadcast_to(np.arange(n_k), perm_np.shape)):
        raise InputError(f"every row of perm must be a permutation of 0..{n_k - 1}")
    if isinstance(resp, torch.Tensor):
        idx = torch.as_tensor(perm_np, dtype=torch.int64, device=resp.device)
        return torch.gather(resp, 1, idx[:, :, None, None].expand_as(resp))
    return np.take_along_axis(resp, perm_np.astype(np.int64)[:, :, None, None], axis=1)
