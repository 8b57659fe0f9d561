"""Class statistics of a few labelled slices, the hyperparameters of the mixture prior.

μ_data (:mod:`deepgmm.data.mu_data`) gives the deep losses a target for the class means.
The same labelled slices also give targets for the other mixture parameters that the
M-step fits on every slice:

- ``log_variances (K, M)``: the expected per-slice log variance of class k in sequence m,
  the mean over the labelled slices of ``log(var_sk + floor)`` weighted by the class's
  pixel count in each slice (a slice where the class has one pixel says little about its
  spread). The M-step fits one variance per slice, so the target is a per-slice
  statistic, not the variance of the pooled pixels (which adds the spread of the class
  means between slices).
- ``weights (K,)``: the mean over the labelled slices of the fraction of the slice's ROI
  pixels that carry class k, the per-slice mixing proportion the M-step fits.
- ``means (K, M)``: μ_data itself (pooled pixels), so that one draw gives all three.

The slices are the ones μ_data uses: :func:`deepgmm.data.mu_data.draw_slices` with the
same ``n_slices`` and ``seed``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from deepgmm.data.mu_data import compute_mu_data, draw_slices, drawn_class_masks
from deepgmm.errors import InputError
from deepgmm.mixture.likelihood import DEFAULT_VAR_FLOOR
from deepgmm.types import SliceBatch


@dataclass(frozen=True)
class ClassPrior:
    """Targets for the mixture parameters of K classes in M sequences.

    Attributes:
        means: ``(K, M)`` class means (μ_data).
        log_variances: ``(K, M)`` expected per-slice log variance (floor included).
        weights: ``(K,)`` expected per-slice class proportion of the ROI (sums to 1).
    """

    means: np.ndarray
    log_variances: np.ndarray
    weights: np.ndarray

    def to_dict(self) -> dict[str, list]:
        """JSON-able form (for the run's ``config.json``)."""
        return {"means": self.means.tolist(), "log_variances": self.log_variances.tolist(),
                "weights": self.weights.tolist()}

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], n_classes: int, n_sequences: int,
                  ) -> ClassPrior:
        """Read :meth:`to_dict`'s form back, checked.

        Raises:
            InputError: missing entries, wrong shapes, non-finite values or weights that are
                not a distribution.
        """
        if not isinstance(doc, Mapping) or not {"means", "log_variances", "weights"} <= set(doc):
            raise InputError("class_prior must hold 'means', 'log_variances' and 'weights'")
        try:
            means = np.asarray(doc["means"], dtype=np.float64)
            log_var = np.asarray(doc["log_variances"], dtype=np.float64)
            weights = np.asarray(doc["weights"], dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise InputError(f"class_prior holds non-numeric values: {err}") from err
        shape = (int(n_classes), int(n_sequences))
        if means.shape != shape or log_var.shape != shape or weights.shape != shape[:1]:
            raise InputError(f"class_prior must have means and log_variances of shape (K, M) = "
                             f"{shape} and weights of shape ({shape[0]},), got "
                             f"{means.shape}, {log_var.shape}, {weights.shape}")
        if not (np.isfinite(means).all() and np.isfinite(log_var).all()
                and np.isfinite(weights).all()):
            raise InputError("class_prior holds NaN or infinite values")
        if (weights <= 0).any() or abs(weights.sum() - 1.0) > 1e-6:
            raise InputError(f"class_prior weights must be > 0 and sum to 1, got "
                             f"{weights.tolist()}")
        return cls(means=means, log_variances=log_var, weights=weights)


def compute_class_prior(batch: SliceBatch, n_slices: int = 10, seed: int = 42, *,
                        var_floor: float = DEFAULT_VAR_FLOOR) -> ClassPrior:
    """Class means, per-slice log variances and proportions of ``n_slices`` labelled slices.

    Args:
        batch: normalised slices with labels: image ``(B, M, H, W)``, roi and labels
            ``(B, H, W)``.
        n_slices: how many slices to draw (as :func:`~deepgmm.data.mu_data.compute_mu_data`).
        seed: seed of the draw.
        var_floor: added to every variance, as the M-step does.

    Returns:
        A :class:`ClassPrior` (K = 4 classes).

    Raises:
        InputError: no labels, ``n_slices < 1``, or a class absent from every drawn slice.
    """
    means = compute_mu_data(batch, n_slices=n_slices, seed=seed)  # checks labels, classes
    image, onehot = drawn_class_masks(batch, n_slices, seed)  # (S, M, H, W), (S, K, H, W)
    roi = batch.roi[draw_slices(len(batch), n_slices, seed)].numpy()  # (S, H, W)
    counts = onehot.sum(axis=(2, 3))  # (S, K)
    safe = np.maximum(counts, 1.0)[..., None]  # (S, K, 1)
    first = np.einsum("skhw,smhw->skm", onehot, image) / safe  # (S, K, M)
    second = np.einsum("skhw,smhw->skm", onehot, image * image) / safe
    log_var = np.log(np.maximum(second - first * first, 0.0) + var_floor)  # (S, K, M)
    log_variances = (np.einsum("sk,skm->km", counts, log_var)
                     / counts.sum(axis=0)[:, None])  # (K, M)
    roi_pixels = np.maximum(roi.sum(axis=(1, 2)), 1)[:, None]  # (S, 1)
    weights = (counts / roi_pixels).mean(axis=0)  # (K,)
    return ClassPrior(means=means, log_variances=log_variances, weights=weights / weights.sum())
