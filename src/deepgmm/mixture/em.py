"""EM baselines: one Gaussian mixture (or spatially variant mixture) per slice, many
slices at once.

Both estimators fit B independent mixtures in one batched loop over EM iterations, on the
ROI pixels of each slice packed side by side (``(B, M, N)`` with a ``(B, N)`` mask; N is
the largest ROI, see :func:`deepgmm.mixture.likelihood.pack_roi`). A slice that has
converged freezes while the others go on. The maths is that of
:mod:`deepgmm.mixture.likelihood`, in log space throughout.

- :class:`GaussianMixtureEM` follows scikit-learn's ``GaussianMixture``: E-step, M-step,
  stop when the mean log-likelihood (computed in the E-step) changes by less than ``tol``.
- :class:`SpatiallyVariantEM` starts from a GMM fit: per-pixel weights w_nk are its
  posteriors; then E-step ``w_nk <- w_nk N_k(x_n) / sum_j w_nj N_j(x_n)``, M-step means and
  (co)variances only; stop when ``|dNLL_V| < tol``.
"""

from __future__ import annotations

import time
import warnings
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning

from deepgmm.errors import InputError
from deepgmm.mixture.kmeans import batched_kmeans
from deepgmm.mixture.likelihood import (
    DEFAULT_VAR_FLOOR,
    Covariance,
    MixtureParams,
    _check_shapes,
    _masked_mean,
    _roi_counts,
    check_inputs,
    gather_roi,
    gmm_log_joint,
    log_densities,
    log_densities_packed,
    m_step_packed,
    pack_roi,
    scatter_roi,
)
from deepgmm.mixture.smoothing import smooth_weights
from deepgmm.params import (
    SEED_MAX,
    Constraints,
    Integral,
    Interval,
    Real,
    StrOptions,
    check_known,
    check_params,
)
from deepgmm.types import SegmentationResult, SliceBatch

Init = Literal["random", "kmeans", "mu_data"]
EMModel = Literal["em-gmm", "em-svgmm"]
EM_MODELS: tuple[str, ...] = ("em-gmm", "em-svgmm")


_ARRAY = ["array-like", torch.Tensor, None]

__all__ = ["GaussianMixtureEM", "SpatiallyVariantEM", "em_segment"]


def _zero_padding(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(B, C, N)`` values with the padding of ``mask (B, N)`` set to 0."""
    return torch.where(mask.unsqueeze(1), values, torch.zeros((), dtype=values.dtype,
                                                             device=values.device))


def _select(params: MixtureParams, keep: torch.Tensor) -> MixtureParams:
    """The slices ``keep`` (bool ``(B,)`` or indices) of ``params``."""
    return MixtureParams(weights=params.weights[keep], means=params.means[keep],
                         covariances=params.covariances[keep],
                         covariance=params.covariance)


def _store(into: MixtureParams, params: MixtureParams, idx: torch.Tensor) -> None:
    """Write ``params`` (one entry per index) into slices ``idx`` of ``into``, in place."""
    into.weights[idx] = params.weights
    into.means[idx] = params.means
    into.covariances[idx] = params.covariances


class _ActiveSlices:
    """The slices still iterating, as indices into the batch.

    Converged slices are dropped from the working tensors (which also lose the padding
    beyond the largest remaining ROI), so later iterations only pay for the slices that
    still move; their final state is written back by the caller.
    """

    def __init__(self, mask: torch.Tensor) -> None:
        self.count = mask.sum(dim=1)  # (B,)
        self.idx = torch.arange(mask.shape[0], device=mask.device)  # (A,)

    def drop(self, done: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Forget slices ``done (A,)``; returns ``(keep (A,) bool, N of the rest)``."""
        keep = ~done
        self.idx = self.idx[keep]
        n = int(self.count[self.idx].max()) if self.idx.numel() else 0
        return keep, n


def _gmm_e_step(x: torch.Tensor, mask: torch.Tensor, params: MixtureParams,
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log_resp (B, K, N), mean log-likelihood (B,))`` of packed ``x (B, M, N)``."""
    log_w = params.weights.clamp_min(torch.finfo(params.weights.dtype).tiny).log()
    log_joint = log_densities_packed(x, params) + log_w[..., None]  # (B, K, N)
    log_norm = torch.logsumexp(log_joint, dim=1)  # (B, N)
    return log_joint - log_norm.unsqueeze(1), _masked_mean(log_norm, mask)


def _history(values: list[torch.Tensor], n_iter: torch.Tensor) -> list[torch.Tensor]:
    """Per-slice histories from per-iteration ``(B,)`` values: list of B ``(n_iter_b,)``."""
    if not values:
        return [torch.zeros(0) for _ in range(int(n_iter.shape[0]))]
    table = torch.stack(values, dim=1).cpu()  # (B, T)
    return list(table[torch.arange(table.shape[1]) < n_iter.cpu()[:, None]].split(
        n_iter.cpu().tolist()))


class GaussianMixtureEM(BaseEstimator):
    """EM for one Gaussian mixture per slice, B slices at once (a scikit-learn estimator).

    Hyperparameters are keyword-only and stored as given (``get_params``, ``set_params``
    and ``sklearn.base.clone`` work); they are checked in :meth:`fit` against
    :attr:`_parameter_constraints`. Defaults follow the published baseline: random
    initialisation, ``seed=33``, ``tol=2e-4``, at most 100 iterations.

    Args:
        n_components: K.
        covariance: ``"diag"`` or ``"full"``.
        init: ``"random"`` (M-step from uniform random responsibilities, as scikit-learn's
            ``init_params="random"``), ``"kmeans"`` (M-step from a batched k-means
            labelling) or ``"mu_data"`` (as ``"random"``, then means set to ``mu_data``:
            the published ``--mu_data`` baseline).
        mu_data: ``(K, M)`` or ``(B, K, M)`` initial means (required for ``"mu_data"``);
            when given, they replace the initial means of any ``init``, as scikit-learn's
            ``means_init``.
        weights_init: optional ``(K,)`` or ``(B, K)`` initial weights (override ``init``).
        covariances_init: optional ``(K, M)``/``(B, K, M)`` variances (diag) or
            ``(K, M, M)``/``(B, K, M, M)`` covariances (full), overriding ``init``.
        tol: stop a slice when its mean log-likelihood changes by less than this, >= 0.
            ``None`` (default) means the effective default of the class, resolved in
            :meth:`fit`: 2e-4 for :class:`GaussianMixtureEM` (the published EM-GMM
            baseline), 1e-3 for :class:`SpatiallyVariantEM`.
        max_iter: EM iterations at most, >= 1.
        var_floor: added to every variance (scikit-learn's ``reg_covar``), > 0.
        seed: seed of the initialisation, an integer in ``[0, 2**63)``; ``None`` draws
            fresh entropy (a different start on every fit).
        device: where to compute (default: the image's device).
        n_kmeans_init: k-means restarts for ``init="kmeans"``, >= 1.

    Fitted attributes: ``means_ (B, K, M)``, ``covariances_ (B, K, M)`` or
    ``(B, K, M, M)``, ``weights_ (B, K)``, ``n_iter_ (B,)``, ``converged_ (B,)``,
    ``lower_bound_ (B,)`` (mean log-likelihood of the last E-step), ``lower_bounds_``
    (list of B ``(n_iter_b,)`` histories).
    """

    _default_tol: ClassVar[float] = 2e-4

    _parameter_constraints: ClassVar[Constraints] = {
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "covariance": [StrOptions({"diag", "full"})],
        "init": [StrOptions({"random", "kmeans", "mu_data"})],
        "mu_data": _ARRAY,
        "weights_init": _ARRAY,
        "covariances_init": _ARRAY,
        "tol": [Interval(Real, 0, None, closed="left"), None],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "var_floor": [Interval(Real, 0, None, closed="neither")],
        "seed": [Interval(Integral, 0, SEED_MAX, closed="left"), None],
        "device": [str, torch.device, None],
        "n_kmeans_init": [Interval(Integral, 1, None, closed="left")],
    }
    """Constraints of every hyperparameter (scikit-learn's format, checked with
    :func:`deepgmm.params.check_params`); the options model reuses this table."""

    def __init__(self, *, n_components: int = 4, covariance: Covariance = "diag",
                 init: Init = "random", mu_data: torch.Tensor | np.ndarray | None = None,
                 weights_init: torch.Tensor | np.ndarray | None = None,
                 covariances_init: torch.Tensor | np.ndarray | None = None,
                 tol: float | None = None, max_iter: int = 100,
                 var_floor: float = DEFAULT_VAR_FLOOR, seed: int | None = 33,
                 device: str | torch.device | None = None, n_kmeans_init: int = 4) -> None:
        self.n_components = n_components
        self.covariance = covariance
        self.init = init
        self.mu_data = mu_data
        self.weights_init = weights_init
        self.covariances_init = covariances_init
        self.tol = tol
        self.max_iter = max_iter
        self.var_floor = var_floor
        self.seed = seed
        self.device = device
        self.n_kmeans_init = n_kmeans_init

    # ------------------------------------------------------------------ checks
    def _check_params(self) -> float:
        """Check the hyperparameters; returns the effective ``tol``.

        Raises:
            InputError: naming the first bad parameter and what it must be.
        """
        check_params(self._parameter_constraints, self.get_params(deep=False),
                     caller=type(self).__name__)
        if self.init == "mu_data" and self.mu_data is None:
            raise InputError("init='mu_data' needs mu_data, a (K, M) array of class means")
        return self._default_tol if self.tol is None else float(self.tol)

    def _prepare(self, image: torch.Tensor | np.ndarray, roi: torch.Tensor | np.ndarray,
                 *, fitting: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Tensors on the working device, image floating (float32 unless float64), roi bool,
        checked with :func:`check_inputs` for fitting; for predicting only shapes and
        finite values inside the ROI are needed (any number of pixels, constant or not)."""
        try:
            image_t = torch.as_tensor(image)
            roi_t = torch.as_tensor(roi)
        except (TypeError, ValueError, RuntimeError) as err:
            raise InputError(f"image and roi must be arrays or tensors: {err}") from err
        device = torch.device(self.device) if self.device is not None else image_t.device
        if image_t.dtype != torch.float64:
            image_t = image_t.to(torch.float32)
        image_t = image_t.to(device)
        if roi_t.dtype != torch.bool:
            if roi_t.is_floating_point() or roi_t.is_complex():
                raise InputError(f"roi must be a bool or integer mask, got {roi_t.dtype}")
            roi_t = roi_t != 0
        roi_t = roi_t.to(device)
        if fitting:
            check_inputs(image_t, roi_t, n_components=self.n_components)
        else:
            _check_shapes(image_t, roi_t, None, "resp")
            if bool((~torch.isfinite(image_t) & roi_t.unsqueeze(1)).any()):
                raise InputError("image has NaN or infinite values inside the ROI")
        return image_t, roi_t

    def _fitted_check(self, image: torch.Tensor) -> None:
        if not hasattr(self, "means_"):
            raise InputError(f"this {type(self).__name__} is not fitted yet: call fit first")
        if image.shape[0] != self.means_.shape[0] or image.shape[1] != self.means_.shape[2]:
            raise InputError(
                f"image must be (B, M, H, W) with B, M = {tuple(self.means_.shape[::2])} as "
                f"fitted, got {tuple(image.shape)}")

    def _param_tensor(self, value: torch.Tensor | np.ndarray, name: str,
                      shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """``value`` as a ``(B, *shape)`` tensor like ``like`` (a ``shape`` value is
        broadcast to every slice)."""
        t = torch.as_tensor(value).to(dtype=like.dtype, device=like.device)
        b = like.shape[0]
        if tuple(t.shape) == shape:
            t = t.expand(b, *shape)
        if tuple(t.shape) != (b, *shape):
            raise InputError(f"{name} must have shape {shape} or {(b, *shape)}, "
                             f"got {tuple(t.shape)}")
        if not bool(torch.isfinite(t).all()):
            raise InputError(f"{name} has NaN or infinite values")
        return t.clone()

    # ------------------------------------------------------------------ fitting
    def _generator(self) -> torch.Generator:
        gen = torch.Generator(device="cpu")
        if self.seed is None:
            gen.seed()
        else:
            gen.manual_seed(int(self.seed))
        return gen

    def _initial_params(self, x: torch.Tensor, mask: torch.Tensor) -> MixtureParams:
        """Initial parameters for packed ``x (B, M, N)``, ``mask (B, N)``."""
        b, m, n = x.shape
        k = self.n_components
        gen = self._generator()
        if self.init == "kmeans":
            _, labels = batched_kmeans(x.transpose(1, 2), mask, k,
                                       n_init=self.n_kmeans_init, generator=gen)
            resp = torch.nn.functional.one_hot(labels, k).to(x.dtype)  # (B, N, K)
            resp = resp.transpose(1, 2)  # (B, K, N)
        else:
            resp = torch.rand((b, k, n), generator=gen, dtype=torch.float64)
            resp = (resp / resp.sum(dim=1, keepdim=True)).to(x.device, x.dtype)
        params = m_step_packed(_zero_padding(resp, mask), x, _roi_counts(mask, x.dtype),
                               covariance=self.covariance, var_floor=self.var_floor)
        if self.mu_data is not None:  # as scikit-learn's means_init: overrides any init
            params.means = self._param_tensor(self.mu_data, "mu_data", (k, m), x)
        if self.weights_init is not None:
            w = self._param_tensor(self.weights_init, "weights_init", (k,), x)
            if bool((w < 0).any()) or not torch.allclose(w.sum(dim=1), torch.ones_like(w[:, 0])):
                raise InputError("weights_init must be non-negative and sum to 1 over K")
            params.weights = w
        if self.covariances_init is not None:
            shape = (k, m) if self.covariance == "diag" else (k, m, m)
            params.covariances = self._param_tensor(self.covariances_init,
                                                    "covariances_init", shape, x)
        return params

    def _run_gmm(self, x: torch.Tensor, mask: torch.Tensor, tol: float,
                 ) -> tuple[MixtureParams, torch.Tensor]:
        """EM on packed pixels, stopping a slice when its mean log-likelihood moves by less
        than ``tol``; sets the fitted attributes; returns the final parameters and the
        ``(B, K, N)`` log-responsibilities under them."""
        params = self._initial_params(x, mask)
        n_roi = _roi_counts(mask, x.dtype)
        b = x.shape[0]
        final = _select(params, torch.arange(b, device=x.device))  # a copy, filled below
        lower = torch.full((b,), -torch.inf, dtype=x.dtype, device=x.device)
        n_iter = torch.zeros(b, dtype=torch.long, device=x.device)
        converged = torch.zeros(b, dtype=torch.bool, device=x.device)
        history: list[torch.Tensor] = []
        active = _ActiveSlices(mask)
        xa, ma, na, pa = x, mask, n_roi, params  # the active slices' working copies
        for _ in range(self.max_iter):
            idx = active.idx
            log_resp, new_lower = _gmm_e_step(xa, ma, pa)
            pa = m_step_packed(_zero_padding(log_resp.exp(), ma), xa, na,
                               covariance=self.covariance, var_floor=self.var_floor)
            change = new_lower - lower[idx]
            lower[idx] = new_lower
            history.append(torch.full_like(lower, torch.nan).index_copy(0, idx, new_lower))
            n_iter[idx] += 1
            done = change.abs() < tol
            if bool(done.any()):
                _store(final, _select(pa, done), idx[done])
                converged[idx[done]] = True
                keep, n = active.drop(done)
                if n == 0:
                    break
                xa, ma, na, pa = xa[keep, :, :n], ma[keep, :n], na[keep], _select(pa, keep)
        if active.idx.numel():
            _store(final, pa, active.idx)
        self.means_ = final.means
        self.covariances_ = final.covariances
        self.weights_ = final.weights
        self.n_iter_ = n_iter
        self.converged_ = converged
        self.lower_bound_ = lower
        self.lower_bounds_ = _history(history, n_iter)
        log_resp, _ = _gmm_e_step(x, mask, final)
        return final, log_resp

    def _warn_convergence(self) -> None:
        if not bool(self.converged_.all()):
            bad = torch.nonzero(~self.converged_).flatten().tolist()
            warnings.warn(
                f"{type(self).__name__}: {len(bad)} of {self.converged_.numel()} slices "
                f"did not converge in {self.max_iter} iterations (slices {bad[:10]}); "
                "increase max_iter or tol, or check for degenerate data",
                ConvergenceWarning, stacklevel=3)

    def fit(self, image: torch.Tensor | np.ndarray, roi: torch.Tensor | np.ndarray,
            ) -> GaussianMixtureEM:
        """Fit one mixture per slice.

        Args:
            image: ``(B, M, H, W)`` features.
            roi: ``(B, H, W)`` bool (or integer) mask; only these pixels are modelled.

        Returns:
            ``self``, fitted.

        Raises:
            InputError: bad hyperparameters or inputs.
        """
        tol = self._check_params()
        image_t, roi_t = self._prepare(image, roi)
        index, mask = pack_roi(roi_t)
        self._run_gmm(gather_roi(image_t, index, mask), mask, tol)
        self._warn_convergence()
        return self

    # ------------------------------------------------------------------ predicting
    def _params(self) -> MixtureParams:
        return MixtureParams(weights=self.weights_, means=self.means_,
                             covariances=self.covariances_, covariance=self.covariance)

    def _log_joint(self, image: torch.Tensor, roi: torch.Tensor) -> torch.Tensor:
        """``(B, K, H, W)`` log weight + log density under the fitted model."""
        x = torch.where(roi.unsqueeze(1), image, torch.zeros((), dtype=image.dtype,
                                                             device=image.device))
        params = self._params()
        params = MixtureParams(weights=params.weights.to(x.dtype), means=params.means.to(
            x.dtype), covariances=params.covariances.to(x.dtype), covariance=self.covariance)
        return gmm_log_joint(x, params)

    def predict_proba(self, image: torch.Tensor | np.ndarray,
                      roi: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Posterior class probabilities.

        Args:
            image: ``(B, M, H, W)``, B as fitted.
            roi: ``(B, H, W)`` mask.

        Returns:
            ``(B, K, H, W)`` responsibilities (outside the ROI: the posterior of the zero
            vector, to be masked by the caller).
        """
        image_t, roi_t = self._prepare(image, roi, fitting=False)
        self._fitted_check(image_t)
        return torch.softmax(self._log_joint(image_t, roi_t), dim=1)

    def predict(self, image: torch.Tensor | np.ndarray,
                roi: torch.Tensor | np.ndarray) -> torch.Tensor:
        """``(B, H, W)`` int64 most probable component (0..K-1) per pixel."""
        return self.predict_proba(image, roi).argmax(dim=1)

    def score(self, image: torch.Tensor | np.ndarray,
              roi: torch.Tensor | np.ndarray) -> torch.Tensor:
        """``(B,)`` mean log-likelihood over each slice's ROI pixels (minus the NLL)."""
        image_t, roi_t = self._prepare(image, roi, fitting=False)
        self._fitted_check(image_t)
        return _masked_mean(torch.logsumexp(self._log_joint(image_t, roi_t), dim=1), roi_t)


class SpatiallyVariantEM(GaussianMixtureEM):
    """EM for the spatially variant GMM, one per slice, B slices at once.

    The per-pixel weights start from the posteriors of a :class:`GaussianMixtureEM` fit
    (same ``init``, ``seed`` etc., with ``gmm_tol`` and ``gmm_max_iter``); then
    E-step ``w_nk <- w_nk N_k(x_n) / sum_j w_nj N_j(x_n)`` and M-step of means and
    (co)variances from w, until ``|dNLL_V| < tol`` or ``max_iter``. The effective default
    of ``tol=None`` is 1e-3.

    Args:
        gmm_tol: ``tol`` of the initialising GMM fit, >= 0 (default 2e-4).
        gmm_max_iter: ``max_iter`` of the initialising GMM fit, >= 1.
        smoothing: standard deviation (pixels, >= 0, finite) of a Gaussian that smooths the
            per-pixel weights inside the ROI after every E-step (:func:`smooth_weights`), a
            spatial prior that makes neighbouring pixels agree; 0 (default) is the
            published algorithm. With smoothing, NLL_V need not decrease monotonically.
        **others: as :class:`GaussianMixtureEM`.

    Fitted attributes as :class:`GaussianMixtureEM`, with ``weights_ (B, K)`` the ROI mean
    of the per-pixel weights ``pixel_weights_ (B, K, H, W)`` (outside the ROI set to
    ``weights_``), ``lower_bound_ (B,)`` = -NLL_V of the last E-step, ``lower_bounds_`` its
    per-slice history, and ``gmm_n_iter_ (B,)`` the iterations of the initialising GMM.
    ``predict``/``predict_proba``/``score`` apply to the fitted slices only (the weights
    are per pixel).
    """

    _default_tol: ClassVar[float] = 1e-3

    _parameter_constraints: ClassVar[Constraints] = {
        **GaussianMixtureEM._parameter_constraints,
        "gmm_tol": [Interval(Real, 0, None, closed="left")],
        "gmm_max_iter": [Interval(Integral, 1, None, closed="left")],
        "smoothing": [Interval(Real, 0, None, closed="left")],
    }

    def __init__(self, *, n_components: int = 4, covariance: Covariance = "diag",
                 init: Init = "random", mu_data: torch.Tensor | np.ndarray | None = None,
                 weights_init: torch.Tensor | np.ndarray | None = None,
                 covariances_init: torch.Tensor | np.ndarray | None = None,
                 tol: float | None = None, max_iter: int = 100,
                 var_floor: float = DEFAULT_VAR_FLOOR, seed: int | None = 33,
                 device: str | torch.device | None = None, n_kmeans_init: int = 4,
                 gmm_tol: float = GaussianMixtureEM._default_tol,
                 gmm_max_iter: int = 100, smoothing: float = 0.0) -> None:
        super().__init__(n_components=n_components, covariance=covariance, init=init,
                         mu_data=mu_data, weights_init=weights_init,
                         covariances_init=covariances_init, tol=tol, max_iter=max_iter,
                         var_floor=var_floor, seed=seed, device=device,
                         n_kmeans_init=n_kmeans_init)
        self.gmm_tol = gmm_tol
        self.gmm_max_iter = gmm_max_iter
        self.smoothing = smoothing

    def _gmm(self) -> GaussianMixtureEM:
        """The initialising GMM (its hyperparameters were checked with this estimator's)."""
        return GaussianMixtureEM(
            n_components=self.n_components, covariance=self.covariance, init=self.init,
            mu_data=self.mu_data, weights_init=self.weights_init,
            covariances_init=self.covariances_init, tol=self.gmm_tol,
            max_iter=self.gmm_max_iter, var_floor=self.var_floor,
            seed=self.seed, device=self.device,
            n_kmeans_init=self.n_kmeans_init)

    def fit(self, image: torch.Tensor | np.ndarray, roi: torch.Tensor | np.ndarray,
            ) -> SpatiallyVariantEM:
        """Fit one spatially variant mixture per slice.

        Args:
            image: ``(B, M, H, W)`` features.
            roi: ``(B, H, W)`` bool (or integer) mask.

        Returns:
            ``self``, fitted.

        Raises:
            InputError: bad hyperparameters or inputs.
        """
        tol = self._check_params()
        gmm = self._gmm()
        image_t, roi_t = self._prepare(image, roi)
        index, mask = pack_roi(roi_t)
        x = gather_roi(image_t, index, mask)  # (B, M, N)
        n_roi = _roi_counts(mask, x.dtype)
        _, log_w = gmm._run_gmm(x, mask, float(self.gmm_tol))  # (B, K, N)
        self.gmm_n_iter_ = gmm.n_iter_
        params = m_step_packed(_zero_padding(log_w.exp(), mask), x, n_roi,
                               covariance=self.covariance, var_floor=self.var_floor)
        b = x.shape[0]
        final = _select(params, torch.arange(b, device=x.device))  # a copy, filled below
        nll = torch.full((b,), torch.inf, dtype=x.dtype, device=x.device)
        n_iter = torch.zeros(b, dtype=torch.long, device=x.device)
        converged = torch.zeros(b, dtype=torch.bool, device=x.device)
        history: list[torch.Tensor] = []
        active = _ActiveSlices(mask)
        xa, ma, na, pa, la = x, mask, n_roi, params, log_w  # active slices' working copies
        for _ in range(self.max_iter):
            idx = active.idx
            log_joint = la + log_densities_packed(xa, pa)  # (A, K, N)
            log_norm = torch.logsumexp(log_joint, dim=1, keepdim=True)  # (A, 1, N)
            new_nll = -_masked_mean(log_norm[:, 0], ma)  # (A,)
            la = log_joint - log_norm
            if self.smoothing > 0:
                la = self._smooth(la, index[idx, :la.shape[2]], ma, image_t.shape[2:])
            pa = m_step_packed(_zero_padding(la.exp(), ma), xa, na,
                               covariance=self.covariance, var_floor=self.var_floor)
            change = new_nll - nll[idx]
            nll[idx] = new_nll
            history.append(torch.full_like(nll, torch.nan).index_copy(0, idx, -new_nll))
            n_iter[idx] += 1
            done = change.abs() < tol
            if bool(done.any()):
                _store(final, _select(pa, done), idx[done])
                log_w[idx[done], :, :la.shape[2]] = la[done]
                converged[idx[done]] = True
                keep, n = active.drop(done)
                if n == 0:
                    break
                xa, ma, na = xa[keep, :, :n], ma[keep, :n], na[keep]
                pa, la = _select(pa, keep), la[keep, :, :n]
        if active.idx.numel():
            _store(final, pa, active.idx)
            log_w[active.idx, :, :la.shape[2]] = la
        params = final
        self.means_ = params.means
        self.covariances_ = params.covariances
        self.weights_ = params.weights  # the ROI mean of w, from the M-step
        fill = self.weights_[..., None, None].expand(-1, -1, *image_t.shape[2:])
        self.pixel_weights_ = scatter_roi(log_w.exp(), index, mask, fill.contiguous())
        self.n_iter_ = n_iter
        self.converged_ = converged
        self.lower_bound_ = -nll
        self.lower_bounds_ = _history(history, n_iter)
        self._warn_convergence()
        return self

    def _smooth(self, log_w: torch.Tensor, index: torch.Tensor, mask: torch.Tensor,
                grid: torch.Size) -> torch.Tensor:
        """Smooth packed ``log_w (A, K, N)`` on the ``(H, W)`` grid; returns log weights."""
        a, k, _ = log_w.shape
        zeros = torch.zeros((a, k, *grid), dtype=log_w.dtype, device=log_w.device)
        dense = scatter_roi(log_w.exp(), index, mask, zeros)
        roi = scatter_roi(mask[:, None, :].to(log_w.dtype), index, mask, zeros[:, :1]) > 0
        smoothed = smooth_weights(dense, roi[:, 0], float(self.smoothing))
        tiny = torch.finfo(log_w.dtype).tiny
        return gather_roi(smoothed, index, mask, fill=1.0 / k).clamp_min(tiny).log()

    def _fitted_check(self, image: torch.Tensor) -> None:
        super()._fitted_check(image)
        if tuple(image.shape[2:]) != tuple(self.pixel_weights_.shape[2:]):
            raise InputError(
                f"image must be (B, M, H, W) with H, W = {tuple(self.pixel_weights_.shape[2:])}"
                f" as fitted (the weights are per pixel), got {tuple(image.shape)}")

    def _log_joint(self, image: torch.Tensor, roi: torch.Tensor) -> torch.Tensor:
        """``(B, K, H, W)`` log w_nk + log N_k(x_n) under the fitted model."""
        x = torch.where(roi.unsqueeze(1), image, torch.zeros((), dtype=image.dtype,
                                                             device=image.device))
        params = MixtureParams(weights=self.weights_.to(x.dtype),
                               means=self.means_.to(x.dtype),
                               covariances=self.covariances_.to(x.dtype),
                               covariance=self.covariance)
        log_w = self.pixel_weights_.to(x.dtype).clamp_min(
            torch.finfo(x.dtype).tiny).log()
        return log_w + log_densities(x, params)

    def score(self, image: torch.Tensor | np.ndarray,
              roi: torch.Tensor | np.ndarray) -> torch.Tensor:
        """``(B,)`` -NLL_V: mean over ROI pixels of ``log sum_k w_nk N_k(x_n)``."""
        return super().score(image, roi)


def em_segment(batch: SliceBatch, model: EMModel = "em-gmm",
               mu_data: torch.Tensor | np.ndarray | None = None,
               **params: Any) -> SegmentationResult:
    """Segment a batch of slices with EM-GMM or EM-SVGMM.

    Args:
        batch: slices with ``image (B, M, H, W)`` and ``roi (B, H, W)``.
        model: ``"em-gmm"`` (:class:`GaussianMixtureEM`) or ``"em-svgmm"``
            (:class:`SpatiallyVariantEM`).
        mu_data: ``(K, M)`` or ``(B, K, M)`` class means (the estimators' ``mu_data``).
        **params: any other hyperparameter of the estimator (the names of its
            ``_parameter_constraints``: ``n_components``, ``init``, ``tol``, ``seed``,
            ``device``, ``smoothing`` for em-svgmm, ...).

    Returns:
        :class:`SegmentationResult` with ``responsibilities (B, K, H, W)`` float32,
        ``nll (B,)`` (NLL for em-gmm, NLL_V for em-svgmm), ``n_iter (B,)``, ``seconds
        (B,)`` (batch time shared equally), ``means (B, K, M)``, method ``model``.

    Raises:
        InputError: unknown model, an unknown or inapplicable parameter (all of them are
            named), bad hyperparameters or inputs.
    """
    if model not in EM_MODELS:
        raise InputError(f"model must be one of {', '.join(EM_MODELS)}; got {model!r}")
    cls = GaussianMixtureEM if model == "em-gmm" else SpatiallyVariantEM
    check_known(cls._parameter_constraints, params, caller=f"em_segment(model={model!r})")
    estimator = cls(mu_data=mu_data, **params)
    start = time.perf_counter()
    estimator.fit(batch.image, batch.roi)
    resp = estimator.predict_proba(batch.image, batch.roi)
    nll = -estimator.score(batch.image, batch.roi)
    if resp.device.type == "cuda":
        torch.cuda.synchronize(resp.device)
    seconds = time.perf_counter() - start
    b = len(batch)
    return SegmentationResult(
        responsibilities=resp.float(), nll=nll.float(), n_iter=estimator.n_iter_,
        seconds=torch.full((b,), seconds / max(b, 1), dtype=torch.float64),
        means=estimator.means_.float(), method=model)
