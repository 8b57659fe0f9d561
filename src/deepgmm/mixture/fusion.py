"""The network's class probabilities fused with the class Gaussians of the labelled slices.

μ_data takes only the class means from its labelled slices. The same pixels also give each
class's full covariance, an intensity model that the network never sees: a trained deepG /
deepSVG network fits its Gaussians per slice to its own responsibilities, so a class
cluster it has drifted into is its own evidence. The fusion treats the two as independent
experts: the network's probabilities act as the prior of each pixel and the labelled
slices' class Gaussians as the likelihood of its intensities,

    p(k | x_n) ∝ p_net(k | n) · N(x_n; μ_k, Σ_k),

normalised over the K classes inside the ROI (log space; pixels outside it keep the
network's values). It needs no training and no label beyond the slices μ_data already uses
(:func:`deepgmm.data.mu_data.draw_slices`, same count and seed). Measured over five folds by
patient in ``docs/cv_levers.md``.

The Gaussians pool the pixels of the drawn slices (as μ_data does), in the slices'
normalised intensities: they are valid for slices prepared the same way (crop size aside),
which ``predict`` checks through the run's normalisation.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepgmm.data.mu_data import compute_mu_data, drawn_class_masks
from deepgmm.errors import InputError
from deepgmm.mixture.gaussian import log_gaussian_full
from deepgmm.types import CLASS_NAMES, SliceBatch

__all__ = ["FUSIONS", "PROB_FLOOR", "ClassGaussians", "fit_class_gaussians",
           "fuse_probabilities", "read_class_gaussians"]

FUSIONS: tuple[str, ...] = ("labelled", "none")
"""``labelled``: fuse with the labelled slices' class Gaussians; ``none``: the network's
probabilities as they are (published)."""

PROB_FLOOR = 1e-6
"""Smallest network probability entering the product (a softmax that underflowed to 0
must not veto a class the intensities favour)."""

COVARIANCE_RIDGE = 1e-6
"""Added to the diagonal of every class covariance (normalised intensity units²)."""


@dataclass(frozen=True)
class ClassGaussians:
    """One full-covariance Gaussian per class, fitted to labelled pixels.

    Attributes:
        means: ``(K, M)`` class means.
        covariances: ``(K, M, M)`` symmetric positive definite.
        n_pixels: ``(K,)`` labelled pixels behind each class.
    """

    means: np.ndarray
    covariances: np.ndarray
    n_pixels: np.ndarray

    def to_dict(self) -> dict[str, list]:
        """JSON-able form (for the run's ``config.json``)."""
        return {"means": self.means.tolist(), "covariances": self.covariances.tolist(),
                "n_pixels": self.n_pixels.tolist()}

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], n_classes: int, n_sequences: int,
                  ) -> ClassGaussians:
        """Read :meth:`to_dict`'s form back, checked.

        Raises:
            InputError: missing entries, wrong shapes, non-finite values or a covariance
                that is not symmetric positive definite.
        """
        if not isinstance(doc, Mapping) or not {"means", "covariances", "n_pixels"} <= set(doc):
            raise InputError("class_gaussians must hold 'means', 'covariances' and 'n_pixels'")
        try:
            means = np.asarray(doc["means"], dtype=np.float64)
            cov = np.asarray(doc["covariances"], dtype=np.float64)
            n_pixels = np.asarray(doc["n_pixels"], dtype=np.int64)
        except (TypeError, ValueError) as err:
            raise InputError(f"class_gaussians holds non-numeric values: {err}") from err
        k, m = int(n_classes), int(n_sequences)
        if means.shape != (k, m) or cov.shape != (k, m, m) or n_pixels.shape != (k,):
            raise InputError(f"class_gaussians must have means (K, M) = ({k}, {m}), "
                             f"covariances ({k}, {m}, {m}) and n_pixels ({k},), got "
                             f"{means.shape}, {cov.shape}, {n_pixels.shape}")
        if not (np.isfinite(means).all() and np.isfinite(cov).all()):
            raise InputError("class_gaussians holds NaN or infinite values")
        if not np.allclose(cov, cov.transpose(0, 2, 1)) or (
                np.linalg.eigvalsh(cov) <= 0).any():
            raise InputError("class_gaussians covariances must be symmetric positive "
                             "definite")
        return cls(means=means, covariances=cov, n_pixels=n_pixels)


def fit_class_gaussians(batch: SliceBatch, n_slices: int = 10, seed: int = 42, *,
                        ridge: float = COVARIANCE_RIDGE) -> ClassGaussians:
    """Class means and full covariances of the ROI pixels of ``n_slices`` labelled slices.

    Args:
        batch: normalised slices with labels: image ``(B, M, H, W)``, roi and labels
            ``(B, H, W)``.
        n_slices: how many slices to draw (as :func:`~deepgmm.data.mu_data.compute_mu_data`).
        seed: seed of the draw.
        ridge: added to each covariance's diagonal.

    Returns:
        A :class:`ClassGaussians` (K = 4 classes); its means equal μ_data of the same draw.

    Raises:
        InputError: no labels, ``n_slices < 1``, a class absent from every drawn slice, or
            a class with fewer pixels than sequences + 1 (no covariance).
    """
    compute_mu_data(batch, n_slices=n_slices, seed=seed)  # checks labels and classes
    image, onehot = drawn_class_masks(batch, n_slices, seed)  # (S, M, H, W), (S, K, H, W)
    m = image.shape[1]
    counts = onehot.sum(axis=(0, 2, 3))  # (K,)
    if (counts < m + 1).any():
        few = [CLASS_NAMES[i] for i in np.flatnonzero(counts < m + 1)]
        raise InputError(f"class Gaussians need at least {m + 1} labelled pixels per class; "
                         f"{', '.join(few)} have fewer in the {len(image)} drawn slices")
    means = np.einsum("skhw,smhw->km", onehot, image) / counts[:, None]  # (K, M)
    second = np.einsum("skhw,smhw,sphw->kmp", onehot, image, image) / counts[:, None, None]
    cov = second - np.einsum("km,kp->kmp", means, means) + ridge * np.eye(m)[None]
    cov = 0.5 * (cov + cov.transpose(0, 2, 1))
    return ClassGaussians(means=means, covariances=cov, n_pixels=counts.astype(np.int64))


def fuse_probabilities(probs: torch.Tensor, image: torch.Tensor, roi: torch.Tensor,
                       gaussians: ClassGaussians | Sequence[ClassGaussians],
                       ) -> torch.Tensor:
    """The network's class probabilities times the labelled class likelihoods, normalised.

    Args:
        probs: ``(B, K, H, W)`` class probabilities.
        image: ``(B, M, H, W)`` the slices' normalised intensities.
        roi: ``(B, H, W)`` bool; pixels outside keep ``probs``.
        gaussians: one :class:`ClassGaussians`, or several (an ensemble's runs: their
            log-likelihoods are averaged).

    Returns:
        ``(B, K, H, W)`` probabilities in ``probs``' dtype, summing to 1 over K.

    Raises:
        InputError: mismatched shapes or class / sequence counts.
    """
    models = [gaussians] if isinstance(gaussians, ClassGaussians) else list(gaussians)
    if not models:
        raise InputError("fusion needs at least one set of class Gaussians")
    b, k, h, w = probs.shape
    m = image.shape[1]
    if image.shape != (b, m, h, w) or roi.shape != (b, h, w):
        raise InputError(f"fusion: probabilities {tuple(probs.shape)}, image "
                         f"{tuple(image.shape)} and roi {tuple(roi.shape)} do not match")
    for g in models:
        if g.means.shape != (k, m):
            raise InputError(f"fusion: class Gaussians of {g.means.shape[0]} classes in "
                             f"{g.means.shape[1]} sequences, the slices have {k} classes "
                             f"in {m} sequences")
    x = image.to(torch.float64)
    log_lik = torch.stack([log_gaussian_full(
        x, torch.as_tensor(g.means, dtype=torch.float64).expand(b, k, m),
        torch.as_tensor(g.covariances, dtype=torch.float64).expand(b, k, m, m))
        for g in models]).mean(dim=0)  # (B, K, H, W); the stack runs over ensemble members
    log_post = probs.to(torch.float64).clamp_min(PROB_FLOOR).log() + log_lik
    fused = torch.softmax(log_post, dim=1)
    inside = roi.to(torch.bool)[:, None]
    return torch.where(inside, fused, probs.to(torch.float64)).to(probs.dtype)


def read_class_gaussians(path: str | os.PathLike[str], n_sequences: int,
                         ) -> ClassGaussians | None:
    """The class Gaussians a μ_data file of ``deepgmm mu-data`` carries (written beside the
    means from the same labelled slices), or ``None`` for a file without them.

    Raises:
        InputError: an unreadable file, or class Gaussians of the wrong shape.
    """
    import json

    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"μ_data file {str(path)!r} cannot be read: {err}") from err
    stored = doc.get("class_gaussians") if isinstance(doc, dict) else None
    if stored is None:
        return None
    return ClassGaussians.from_dict(stored, len(CLASS_NAMES), n_sequences)
