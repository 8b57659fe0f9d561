"""Left-ventricle anatomy as a constraint on the label map: one blood pool, a smooth wall.

A Gaussian mixture labels every pixel by its intensities alone, so two kinds of error are
common on cardiac MR: LGE makes the blood pool and scar equally bright, and trabeculae or
papillary muscles inside the cavity are as dark as myocardium in bSSFP. Anatomy rules both
out: in a short-axis slice the left-ventricular blood pool is one convex region inside the
wall, and edema and scar lie in the wall (MyoPS labels papillary muscles as blood pool).
:func:`anatomical_labels` turns class probabilities into a label map that obeys this:

1. the pixels whose most likely class is blood form components; the largest one is the
   blood pool, grown to its convex hull (within the ROI) -- cavity pixels labelled as wall
   become blood;
2. everything else in the ROI is wall: blood not connected to the pool (e.g. bright scar in
   LGE separated from the cavity by healthy wall) is relabelled as its most likely wall
   class; scar labelled blood that touches the cavity stays blood. Where the ROI is a
   prediction (``predicted_roi``: ``--roi auto``), blood apart from the cavity is more often
   blood outside the LV that the predicted mask took in (right ventricle, atrium) than
   scar, and bright in LGE it would become scar: those pixels are left out of the LV
   (label 0) instead;
3. inside the wall, the wall classes' (myocardium, edema, scar) probabilities are smoothed
   with a Gaussian of ``wall_sigma_mm`` (the probability maps restricted to the ROI,
   smoothed in plane, in millimetres so that grids of any spacing are treated alike), so
   that isolated pixels follow their neighbourhood; rule ``lv`` gives each wall pixel its
   most likely smoothed class, rule ``lv-dice`` labels the wall of each slice so that the
   expected Dice of the three wall classes is largest (:mod:`deepgmm.decision`: edema and
   scar, small and uncertain, get the pixels where they are nearly as likely as
   myocardium).

The probability maps themselves are not changed; the rule applies to the label map only, and
only where the channels are the classes in order (μ_data fixed the order, or a matching rule
relabelled the clusters).

Each slice is treated on its own (slices are 10-23 mm apart); step 1 loops over the slices
because the convex hull (:class:`scipy.spatial.Delaunay`) is a per-slice computation.
scikit-image's ``convex_hull_image`` would do the same but is not a dependency.

Shapes: probabilities ``(B, 4, H, W)`` in class order (blood, myocardium, edema, scar), ROI
``(B, H, W)``, spacing ``(B, 2)`` mm.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, Delaunay, QhullError

from deepgmm.decision import expected_dice_labels
from deepgmm.errors import InputError
from deepgmm.roi.postprocess import largest_component_per_slice

__all__ = ["ANATOMY_RULES", "DEFAULT_WALL_SIGMA_MM", "WALL_DECISIONS", "AnatomyRule",
           "anatomical_labels", "apply_anatomy", "blood_pool", "convex_hull_mask",
           "is_anatomy_rule"]

AnatomyRule = Literal["lv-dice", "lv", "none"]
ANATOMY_RULES: tuple[str, ...] = ("lv-dice", "lv", "none")
"""``lv-dice``: :func:`anatomical_labels` with the wall labelled for the largest expected Dice;
``lv``: :func:`anatomical_labels` with the most likely wall class; ``none``: the most likely
class of each pixel (the published label map)."""

WALL_DECISIONS: tuple[str, ...] = ("argmax", "dice")
"""How the wall pixels get their class: the most likely smoothed class, or the labelling of
largest expected Dice (:func:`deepgmm.decision.expected_dice_labels`)."""

DEFAULT_WALL_SIGMA_MM = 2.0
"""Smoothing of the wall classes' probabilities: about a quarter of a healthy LV wall's
thickness (8-10 mm), so that a transmural stripe of scar or edema survives."""


def convex_hull_mask(mask: np.ndarray) -> np.ndarray:
    """The pixels of ``(H, W)`` ``mask``'s convex hull (pixel centres on or inside it).

    Fewer than three pixels, or pixels on one line, have no 2-D hull: the mask is returned
    as it is.
    """
    mask = np.asarray(mask, dtype=bool)
    points = np.argwhere(mask)
    if len(points) < 3:
        return mask.copy()
    try:
        hull = Delaunay(points[ConvexHull(points).vertices])
    except QhullError:  # collinear
        return mask.copy()
    lo, hi = points.min(axis=0), points.max(axis=0) + 1
    grid = np.stack(np.meshgrid(np.arange(lo[0], hi[0]), np.arange(lo[1], hi[1]),
                                indexing="ij"), axis=-1).reshape(-1, 2)
    inside = hull.find_simplex(grid, tol=1e-9) >= 0
    out = mask.copy()
    out[grid[inside, 0], grid[inside, 1]] = True
    return out


def blood_pool(labels: np.ndarray, roi: np.ndarray) -> np.ndarray:
    """The blood pool of every slice: the convex hull of the largest component of blood
    (label 1), within the ROI.

    Args:
        labels: ``(B, H, W)`` class indices (1 = blood).
        roi: ``(B, H, W)`` bool.

    Returns:
        ``(B, H, W)`` bool; empty where a slice has no blood pixel.
    """
    blood = np.moveaxis(np.asarray(labels) == 1, 0, -1)          # (H, W, B)
    largest = np.moveaxis(largest_component_per_slice(blood), -1, 0)
    pool = np.stack([convex_hull_mask(m) for m in largest]) if len(largest) else largest
    return pool & np.asarray(roi, dtype=bool)


def _smoothed_wall(probs: np.ndarray, roi: np.ndarray, spacing: np.ndarray,
                   sigma_mm: float) -> np.ndarray:
    """``(B, 3, H, W)`` wall-class probabilities (channels 1..3), zero outside the ROI,
    smoothed in plane with a Gaussian of ``sigma_mm`` (per-slice spacing)."""
    wall = np.where(roi[:, None], probs[:, 1:], 0.0).astype(np.float32)
    if sigma_mm <= 0:
        return wall
    out = np.empty_like(wall)
    for b in range(wall.shape[0]):  # the spacing, hence the kernel, differs between slices
        sigma = (0.0, sigma_mm / spacing[b, 0], sigma_mm / spacing[b, 1])
        out[b] = ndimage.gaussian_filter(wall[b], sigma=sigma, mode="constant")
    return out


def anatomical_labels(probs: np.ndarray, roi: np.ndarray, spacing: np.ndarray | None = None,
                      *, wall_sigma_mm: float = DEFAULT_WALL_SIGMA_MM,
                      wall_decision: str = "argmax", predicted_roi: bool = False,
                      ) -> np.ndarray:
    """The label map of class probabilities under the LV anatomy rule (module docstring).

    Args:
        probs: ``(B, 4, H, W)`` class probabilities: blood, myocardium, edema, scar.
        roi: ``(B, H, W)`` bool.
        spacing: ``(B, 2)`` in-plane spacing in mm (None: 1 mm).
        wall_sigma_mm: Gaussian smoothing of the wall classes (0: none).
        wall_decision: ``"argmax"`` (rule ``lv``) or ``"dice"`` (rule ``lv-dice``), see
            :data:`WALL_DECISIONS`.
        predicted_roi: the ROI is a prediction, not the ground truth's or a hand-made
            mask: blood pixels apart from the cavity are left out (label 0), step 2.

    Returns:
        ``(B, H, W)`` int64: 0 outside the ROI (and, with ``predicted_roi``, on blood apart
        from the cavity), 1 blood pool, 2-4 the wall classes.

    Raises:
        InputError: not four classes, mismatched shapes, a negative or non-finite sigma, a
            non-positive spacing, or an unknown wall decision.
    """
    probs = np.asarray(probs, dtype=np.float32)
    roi = np.asarray(roi, dtype=bool)
    if probs.ndim != 4 or probs.shape[1] != 4:
        raise InputError(f"the LV anatomy rule needs (B, 4, H, W) class probabilities "
                         f"(blood, myocardium, edema, scar), got shape {probs.shape}")
    if roi.shape != (probs.shape[0], *probs.shape[2:]):
        raise InputError(f"roi shape {roi.shape} does not match probabilities "
                         f"{probs.shape}")
    if wall_decision not in WALL_DECISIONS:
        raise InputError(f"wall_decision must be one of {', '.join(WALL_DECISIONS)}, got "
                         f"{wall_decision!r}", params=("wall_decision",))
    if not np.isfinite(wall_sigma_mm) or wall_sigma_mm < 0:
        raise InputError(f"wall_sigma_mm must be a finite number >= 0, got {wall_sigma_mm}",
                         params=("wall_sigma_mm",))
    n_b = probs.shape[0]
    spacing = np.ones((n_b, 2)) if spacing is None else np.asarray(spacing, dtype=np.float64)
    if spacing.shape == (2,):
        spacing = np.broadcast_to(spacing, (n_b, 2))
    if spacing.shape != (n_b, 2):
        raise InputError(f"spacing must be (B, 2) = ({n_b}, 2) in mm, got shape "
                         f"{spacing.shape}")
    if not np.all(np.isfinite(spacing) & (spacing > 0)):
        raise InputError(f"spacing must be positive, got {spacing.tolist()}")
    labels = np.where(roi, np.argmax(probs, axis=1) + 1, 0)
    pool = blood_pool(labels, roi)
    smoothed = _smoothed_wall(probs, roi, spacing, wall_sigma_mm)
    # a predicted ROI: blood apart from the cavity is left out of the LV (step 2)
    lv = roi & ~((labels == 1) & ~pool) if predicted_roi else roi
    if wall_decision == "dice":
        wall = lv & ~pool
        total = smoothed.sum(axis=1, keepdims=True)
        shares = np.where(total > 0, smoothed / np.maximum(total, 1e-30), 1.0 / 3.0)
        wall_class = expected_dice_labels(shares, wall) + 2
    else:
        wall_class = np.argmax(smoothed, axis=1) + 2
    return np.where(pool, 1, np.where(lv, wall_class, 0)).astype(np.int64)


def is_anatomy_rule(rule: str | None) -> bool:
    """Whether ``rule`` is one of the LV anatomy rules (``lv``, ``lv-dice``), which need the
    channels in class order."""
    return rule in ("lv", "lv-dice")


def apply_anatomy(rule: str, probs: np.ndarray, roi: np.ndarray,
                  spacing: np.ndarray | None = None, *,
                  predicted_roi: bool = False) -> np.ndarray:
    """The label map of ``(B, 4, H, W)`` class probabilities under ``rule`` (``"lv-dice"``,
    ``"lv"`` or ``"none"``: argmax + 1 inside the ROI, 0 outside); ``(B, H, W)`` int64.
    ``predicted_roi``: as :func:`anatomical_labels`' (the LV rules only)."""
    if rule not in ANATOMY_RULES:
        raise InputError(f"anatomy must be one of {', '.join(ANATOMY_RULES)}, got {rule!r}",
                         params=("anatomy",))
    if is_anatomy_rule(rule):
        return anatomical_labels(probs, roi, spacing,
                                 wall_decision="dice" if rule == "lv-dice" else "argmax",
                                 predicted_roi=predicted_roi)
    roi = np.asarray(roi, dtype=bool)
    return np.where(roi, np.argmax(np.asarray(probs), axis=1) + 1, 0).astype(np.int64)
