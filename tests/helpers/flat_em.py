"""Thin scikit-learn adapters of the EM estimators for ``sklearn.utils.estimator_checks``.

scikit-learn's checks pass flat arrays ``X (n_samples, n_features)``; the estimators fit
``(B, M, H, W)`` slices with a ROI. The adapters present ``X`` as one slice of
``n_samples x 1`` pixels with ``M = n_features`` sequences and a full ROI, and take the
estimator's hyperparameters unchanged.

- :class:`FlatGaussianMixtureEM`: ``fit``, ``predict``, ``predict_proba``, ``score``
  (mean log-likelihood), ``labels_``.
- :class:`FlatSpatiallyVariantEM`: ``fit`` and ``labels_`` only: its weights belong to
  the fitted pixels, so predicting other samples is not defined.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClusterMixin, DensityMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from deepgmm.mixture.em import GaussianMixtureEM, SpatiallyVariantEM


def as_slice(x: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, M)`` samples -> ``image (1, M, N, 1)`` and a full ``roi (1, N, 1)``."""
    image = torch.from_numpy(np.ascontiguousarray(x.T))[None, :, :, None]
    return image, torch.ones(1, x.shape[0], 1, dtype=torch.bool)


class FlatGaussianMixtureEM(ClusterMixin, DensityMixin, BaseEstimator):
    """:class:`GaussianMixtureEM` on flat samples (see the module docstring)."""

    def __init__(self, *, n_components: int = 2, covariance: str = "diag",
                 init: str = "kmeans", tol: float | None = None, max_iter: int = 100,
                 seed: int | None = 33) -> None:
        self.n_components = n_components
        self.covariance = covariance
        self.init = init
        self.tol = tol
        self.max_iter = max_iter
        self.seed = seed

    def _make(self) -> GaussianMixtureEM:
        return GaussianMixtureEM(**self.get_params())

    def fit(self, X, y=None):  # noqa: N803 - scikit-learn's name
        x = validate_data(self, X, dtype=[np.float64, np.float32])
        image, roi = as_slice(x)
        self.estimator_ = self._make().fit(image, roi)
        self.labels_ = self.estimator_.predict(image, roi)[0, :, 0].numpy()
        self.n_iter_ = int(self.estimator_.n_iter_[0])
        return self

    def _slice(self, X) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: N803
        check_is_fitted(self)
        return as_slice(validate_data(self, X, dtype=[np.float64, np.float32], reset=False))

    def predict(self, X) -> np.ndarray:  # noqa: N803
        image, roi = self._slice(X)
        return self.estimator_.predict(image, roi)[0, :, 0].numpy()

    def predict_proba(self, X) -> np.ndarray:  # noqa: N803
        image, roi = self._slice(X)
        return self.estimator_.predict_proba(image, roi)[0, :, :, 0].T.numpy()

    def score(self, X, y=None) -> float:  # noqa: N803
        image, roi = self._slice(X)
        return float(self.estimator_.score(image, roi)[0])


class FlatSpatiallyVariantEM(ClusterMixin, BaseEstimator):
    """:class:`SpatiallyVariantEM` on flat samples: ``fit`` and ``labels_``."""

    def __init__(self, *, n_components: int = 2, covariance: str = "diag",
                 init: str = "kmeans", tol: float | None = None, max_iter: int = 100,
                 seed: int | None = 33, smoothing: float = 0.0) -> None:
        self.n_components = n_components
        self.covariance = covariance
        self.init = init
        self.tol = tol
        self.max_iter = max_iter
        self.seed = seed
        self.smoothing = smoothing

    def fit(self, X, y=None):  # noqa: N803
        x = validate_data(self, X, dtype=[np.float64, np.float32])
        image, roi = as_slice(x)
        self.estimator_ = SpatiallyVariantEM(**self.get_params()).fit(image, roi)
        self.labels_ = self.estimator_.predict(image, roi)[0, :, 0].numpy()
        self.n_iter_ = int(self.estimator_.n_iter_[0])
        return self
