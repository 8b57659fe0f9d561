"""Closed-form M-step and the negative log-likelihoods of deepG and deepSVG.

Every function is batched over slices, masked by the ROI, differentiable, and works in
log space. Shapes: B slices, K classes, M sequences, H x W pixels.

The M-step follows the method description:

    N_k = sum_n p_nk,  pi_k = N_k / |Omega|,  mu_k = sum_n p_nk x_n / N_k,
    sigma2_k = sum_n p_nk (x_n - mu_k)^2 / N_k  (+ variance floor)

with sums over ROI pixels only. Inputs are checked once per call (:func:`check_inputs`):
bad shapes, too small or constant ROIs and non-finite values raise
:class:`deepgmm.errors.InputError` instead of giving a NaN loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from deepgmm.errors import InputError
from deepgmm.mixture.closed_form import diag_mixture_nll
from deepgmm.mixture.gaussian import log_gaussian_diag, log_gaussian_full

Covariance = Literal["diag", "full"]
Gradient = Literal["closed_form", "autograd"]

DEFAULT_VAR_FLOOR = 1e-3
"""Added to every variance (and to the covariance diagonal); data are z-scored, so this is
0.1 % of the slice's variance: enough to stop a class collapsing onto identical values."""


def _mass_eps(dtype: torch.dtype) -> float:
    """Added to class masses N_k before dividing (as scikit-learn: 10 machine epsilons)."""
    return 10.0 * torch.finfo(dtype).eps


@dataclass
class MixtureParams:
    """Parameters of one mixture per slice.

    Attributes:
        weights: ``(B, K)`` mixing proportions (sum to 1 over K).
        means: ``(B, K, M)``.
        covariances: ``(B, K, M)`` variances for ``"diag"`` or ``(B, K, M, M)`` for ``"full"``.
        covariance: ``"diag"`` or ``"full"``.
    """

    weights: torch.Tensor
    means: torch.Tensor
    covariances: torch.Tensor
    covariance: Covariance = "diag"


def _check_shapes(image: torch.Tensor, roi: torch.Tensor, maps: torch.Tensor | None,
                  name: str) -> None:
    if not isinstance(image, torch.Tensor) or not isinstance(roi, torch.Tensor):
        raise InputError("image and roi must be torch tensors, got "
                         f"{type(image).__name__} and {type(roi).__name__}")
    if image.ndim != 4:
        raise InputError(f"image must be (B, M, H, W), got shape {tuple(image.shape)}")
    if not image.is_floating_point():
        raise InputError(f"image must be a floating-point tensor, got {image.dtype}")
    b, _, h, w = image.shape
    if tuple(roi.shape) != (b, h, w):
        raise InputError(f"roi must be (B, H, W) = {(b, h, w)}, got {tuple(roi.shape)}")
    if roi.dtype != torch.bool:
        raise InputError(f"roi must be a bool tensor, got {roi.dtype}")
    if maps is not None:
        _check_maps_shape(maps, (b, h, w), name)


def _check_maps_shape(maps: torch.Tensor, bhw: tuple[int, int, int], name: str) -> None:
    """``maps`` must be a floating ``(B, K, H, W)`` tensor with the given B, H, W."""
    b, h, w = bhw
    if not isinstance(maps, torch.Tensor) or maps.ndim != 4 or maps.shape[0] != b \
            or tuple(maps.shape[2:]) != (h, w):
        shape = tuple(maps.shape) if isinstance(maps, torch.Tensor) else type(maps)
        raise InputError(f"{name} must be (B, K, H, W) with B, H, W = {(b, h, w)}, "
                         f"got {shape}")
    if not maps.is_floating_point():
        raise InputError(f"{name} must be a floating-point tensor, got {maps.dtype}")


def check_inputs(image: torch.Tensor, roi: torch.Tensor, *,
                 n_components: int | None = None, maps: torch.Tensor | None = None,
                 maps_name: str = "resp", log_maps: bool = False) -> None:
    """Raise :class:`InputError` unless the inputs describe a well-posed mixture fit.

    Checks, per slice: shapes and dtypes; at least ``max(K, 2)`` ROI pixels; finite image
    values inside the ROI; no sequence constant inside the ROI; finite ``maps`` inside the
    ROI (for ``log_maps`` only NaN and +inf are refused, -inf is log 0). All checks cost
    one host-device synchronisation.

    Args:
        image: ``(B, M, H, W)`` floating pixel features.
        roi: ``(B, H, W)`` bool.
        n_components: K, when known (taken from ``maps`` otherwise).
        maps: optional ``(B, K, H, W)`` responsibilities or log-responsibilities.
        maps_name: name of ``maps`` for messages.
        log_maps: ``maps`` holds log-probabilities.
    """
    _check_shapes(image, roi, maps, maps_name)
    index, mask = pack_roi(roi)
    _check_packed(gather_roi(image, index, mask), mask, n_components=n_components,
                  maps=None if maps is None else gather_roi(maps, index, mask),
                  maps_name=maps_name, log_maps=log_maps)


def _check_packed(x: torch.Tensor, mask: torch.Tensor, *, n_components: int | None,
                  maps: torch.Tensor | None, maps_name: str, log_maps: bool,
                  check_image: bool = True) -> None:
    """:func:`check_inputs` on packed ROI pixels: ``x (B, M, N)``, ``mask (B, N)``,
    ``maps (B, K, N)`` (shapes already checked); ``check_image=False`` skips the image's
    values (checked once by :func:`pack_image`)."""
    k = n_components if n_components is not None else (
        maps.shape[1] if maps is not None else 1)
    if maps is not None and n_components is not None and maps.shape[1] != n_components:
        raise InputError(f"{maps_name} has {maps.shape[1]} classes, expected {n_components}")
    if k < 1:
        raise InputError(f"the number of classes must be >= 1, got {k}")
    with torch.no_grad():
        inside = mask.unsqueeze(1)  # (B, 1, N)
        count = mask.sum(dim=1)  # (B,)
        if x.shape[2] == 0 or not check_image:  # no ROI pixel at all, or checked before
            nonfinite = constant = torch.zeros(x.shape[:2], dtype=torch.bool,
                                               device=x.device)
        else:
            nonfinite = (~torch.isfinite(x) & inside).any(dim=2)  # (B, M)
            big = torch.finfo(x.dtype).max
            hi = torch.where(inside, x, -big).amax(dim=2)  # (B, M)
            lo = torch.where(inside, x, big).amin(dim=2)  # (B, M)
            constant = (hi <= lo) & (count[:, None] > 0)  # (B, M)
        if maps is not None and maps.shape[2] > 0:
            bad = torch.isnan(maps) | (torch.isposinf(maps) if log_maps
                                      else ~torch.isfinite(maps))
            bad_maps = (bad & inside).any(dim=(1, 2))  # (B,)
        else:
            bad_maps = torch.zeros_like(count, dtype=torch.bool)
        flags = torch.stack([count < max(k, 2), nonfinite.any(dim=1), constant.any(dim=1),
                             bad_maps])  # (4, B)
        if not bool(flags.any()):
            return
        flags_list = flags.tolist()
    if True in flags_list[0]:
        b = flags_list[0].index(True)
        raise InputError(f"slice {b}: the ROI has {int(count[b])} pixels, needs at least "
                         f"{max(k, 2)} for {k} classes (check the ROI mask)")
    if True in flags_list[1]:
        b = flags_list[1].index(True)
        m = int(torch.nonzero(nonfinite[b])[0])
        raise InputError(f"slice {b}, sequence {m}: image has NaN or infinite values "
                         "inside the ROI")
    if True in flags_list[2]:
        b = flags_list[2].index(True)
        m = int(torch.nonzero(constant[b])[0])
        raise InputError(f"slice {b}, sequence {m}: image is constant inside the ROI, "
                         "nothing to separate (check the sequence file and its scaling)")
    b = flags_list[3].index(True)
    raise InputError(f"slice {b}: {maps_name} has NaN or infinite values inside the ROI")


def _check_options(covariance: str, var_floor: float) -> None:
    if covariance not in ("diag", "full"):
        raise InputError(f"covariance must be 'diag' or 'full', got {covariance!r}")
    if not var_floor > 0.0:
        raise InputError(f"var_floor must be > 0, got {var_floor}")


def pack_roi(roi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each slice's ROI pixels go when packed side by side.

    The likelihoods only need the ROI pixels (about a tenth of a cardiac crop), so they
    work on ``(B, C, N)`` tensors holding each slice's ROI pixels first, N being the
    largest ROI; the rest is padding, excluded by ``mask``.

    Args:
        roi: ``(B, H, W)`` bool.

    Returns:
        ``(index (B, N) int64, mask (B, N) bool)``: flat pixel index ``h * W + w`` of each
        packed pixel (0 on padding) and which packed entries are ROI pixels.
    """
    b = roi.shape[0]
    flat = roi.reshape(b, -1)
    counts = flat.sum(dim=1)  # (B,)
    rows, cols = flat.nonzero(as_tuple=True)  # (P,), row-major: ROI pixels slice by slice
    n = int(counts.max()) if b else 0
    start = counts.cumsum(0) - counts  # (B,)
    pos = torch.arange(rows.shape[0], device=roi.device) - start[rows]
    index = torch.zeros((b, n), dtype=torch.long, device=roi.device)
    index[rows, pos] = cols
    mask = torch.arange(n, device=roi.device)[None, :] < counts[:, None]
    return index, mask


def gather_roi(values: torch.Tensor, index: torch.Tensor, mask: torch.Tensor,
               fill: float = 0.0) -> torch.Tensor:
    """Packed ROI pixels of ``values (B, C, H, W)`` -> ``(B, C, N)``, padding = ``fill``.

    ``index`` and ``mask`` come from :func:`pack_roi`; differentiable in ``values``.
    """
    b, c = values.shape[:2]
    out = torch.gather(values.reshape(b, c, -1), 2,
                       index[:, None, :].expand(b, c, index.shape[1]))
    return torch.where(mask[:, None, :], out, torch.full((), fill, dtype=values.dtype,
                                                         device=values.device))


def scatter_roi(packed: torch.Tensor, index: torch.Tensor, mask: torch.Tensor,
                fill: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`gather_roi`: packed ``(B, C, N)`` onto a copy of ``fill
    (B, C, H, W)`` (pixels outside the ROI keep ``fill``)."""
    b, c, h, w = fill.shape
    src = torch.where(mask[:, None, :], packed,
                      torch.gather(fill.reshape(b, c, h * w), 2,
                                   index[:, None, :].expand(b, c, index.shape[1])))
    out = fill.reshape(b, c, h * w).scatter(2, index[:, None, :].expand_as(src), src)
    return out.reshape(b, c, h, w)


@dataclass(frozen=True)
class PackedROI:
    """A batch's ROI pixels packed once (:func:`pack_image`), for many loss evaluations.

    During a fit the images and ROIs stay fixed while the responsibilities change, so the
    packing (one ``nonzero``) and the image checks need not be repeated on every call of
    :func:`gmm_nll_packed` / :func:`svgmm_nll_packed`.

    Attributes:
        index: ``(B, N)`` flat pixel index of each packed pixel (0 on padding).
        mask: ``(B, N)`` bool, which packed entries are ROI pixels.
        x: ``(B, M, N)`` image values of the packed pixels, 0 on padding.
        n_roi: ``(B,)`` ROI pixel counts (at least 1), in the image's dtype.
        size: ``(H, W)`` of the slices.
    """

    index: torch.Tensor
    mask: torch.Tensor
    x: torch.Tensor
    n_roi: torch.Tensor
    size: tuple[int, int]


def pack_image(image: torch.Tensor, roi: torch.Tensor, *, n_components: int | None = None,
               validate: bool = True) -> PackedROI:
    """Pack the ROI pixels of ``image (B, M, H, W)`` under ``roi (B, H, W)`` once.

    Args:
        image: ``(B, M, H, W)`` floating pixel features.
        roi: ``(B, H, W)`` bool.
        n_components: K, to check that every ROI has enough pixels.
        validate: run the checks of :func:`check_inputs` on the image.

    Raises:
        InputError: bad shapes or values (see :func:`check_inputs`).
    """
    _check_shapes(image, roi, None, "")
    index, mask = pack_roi(roi)
    x = gather_roi(image, index, mask)
    if validate:
        _check_packed(x, mask, n_components=n_components, maps=None, maps_name="",
                      log_maps=False)
    return PackedROI(index=index, mask=mask, x=x, n_roi=_roi_counts(mask, image.dtype),
                     size=(int(image.shape[2]), int(image.shape[3])))


def _packed_maps(maps: torch.Tensor, packed: PackedROI, *, maps_name: str, log_maps: bool,
                 validate: bool) -> torch.Tensor:
    """``(B, K, N)`` packed ``maps (B, K, H, W)``, checked against ``packed`` (the image
    itself was checked by :func:`pack_image`)."""
    _check_maps_shape(maps, (packed.index.shape[0], *packed.size), maps_name)
    out = gather_roi(maps, packed.index, packed.mask)
    if validate:
        _check_packed(packed.x, packed.mask, n_components=None, maps=out,
                      maps_name=maps_name, log_maps=log_maps, check_image=False)
    return out


def m_step_packed(p: torch.Tensor, x: torch.Tensor, n_roi: torch.Tensor, *,
                  covariance: Covariance = "diag",
                  var_floor: float = DEFAULT_VAR_FLOOR) -> MixtureParams:
    """The M-step on packed ROI pixels (see :func:`pack_roi`).

    Args:
        p: ``(B, K, N)`` responsibilities, exactly 0 on padding.
        x: ``(B, M, N)`` features, finite (0) on padding.
        n_roi: ``(B,)`` ROI pixel counts (>= 1), dtype of ``p``.
        covariance: ``"diag"`` or ``"full"``.
        var_floor: added to each variance / the covariance diagonal.

    Returns:
        :class:`MixtureParams`, as :func:`m_step`.
    """
    n_k = p.sum(dim=2)  # (B, K)
    weights = n_k / n_roi[:, None]
    denom = (n_k + _mass_eps(p.dtype))[..., None]  # (B, K, 1)
    means = torch.bmm(p, x.transpose(1, 2)) / denom  # (B, K, M)
    if covariance == "diag":
        # E_p[x^2] - mu^2 as scikit-learn: two small matrix products, no (B, K, M, N) temporary
        second = torch.bmm(p, x.square().transpose(1, 2)) / denom  # (B, K, M)
        covs = (second - means.square()).clamp_min(0.0) + var_floor
    else:
        diff = x.unsqueeze(1) - means.unsqueeze(3)  # (B, K, M, N)
        b, k, m, n = diff.shape
        weighted = (diff * p.unsqueeze(2)).reshape(b * k, m, n)
        cov = torch.bmm(weighted, diff.reshape(b * k, m, n).transpose(1, 2))
        eye = torch.eye(m, dtype=x.dtype, device=x.device)
        covs = cov.reshape(b, k, m, m) / denom[..., None] + var_floor * eye
    return MixtureParams(weights=weights, means=means, covariances=covs,
                         covariance=covariance)


def log_densities_packed(x: torch.Tensor, params: MixtureParams) -> torch.Tensor:
    """``(B, K, N)`` log N(x_n; mu_k, Sigma_k) of packed ``x (B, M, N)``."""
    return log_densities(x.unsqueeze(2), params).squeeze(2)


def m_step(resp: torch.Tensor, image: torch.Tensor, roi: torch.Tensor, *,
           covariance: Covariance = "diag",
           var_floor: float = DEFAULT_VAR_FLOOR, validate: bool = True) -> MixtureParams:
    """Closed-form weights, means and (co)variances from responsibilities.

    Args:
        resp: ``(B, K, H, W)`` responsibilities p_nk (non-negative, sum to 1 over K).
        image: ``(B, M, H, W)`` pixel features.
        roi: ``(B, H, W)`` bool; only these pixels enter the sums.
        covariance: ``"diag"`` (variances) or ``"full"`` (covariance matrices).
        var_floor: added to each variance / to the covariance diagonal (> 0).
        validate: run :func:`check_inputs` (callers that already checked may skip it).

    Returns:
        :class:`MixtureParams` with ``weights (B, K)``, ``means (B, K, M)`` and
        ``covariances (B, K, M)`` or ``(B, K, M, M)``. A class with no mass gets mean 0,
        variance ``var_floor`` and weight 0.

    Raises:
        InputError: bad shapes, options or values (see :func:`check_inputs`).
    """
    _check_options(covariance, var_floor)
    _check_shapes(image, roi, resp, "resp")
    packed = pack_image(image, roi, n_components=resp.shape[1], validate=validate)
    p = _packed_maps(resp, packed, maps_name="resp", log_maps=False, validate=validate)
    return m_step_packed(p, packed.x, packed.n_roi.to(resp.dtype), covariance=covariance,
                         var_floor=var_floor)


def _roi_counts(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``(B,)`` number of ROI pixels per slice (at least 1) from a ``(B, N)`` mask."""
    return mask.sum(dim=1).to(dtype).clamp_min(1.0)


def log_densities(image: torch.Tensor, params: MixtureParams) -> torch.Tensor:
    """``(B, K, H, W)`` log N(x_n; mu_k, Sigma_k) for the given parameters.

    ``image`` is ``(B, M, H, W)``; values outside any ROI should be finite (callers zero
    them with the ROI first).
    """
    if params.covariance == "diag":
        return log_gaussian_diag(image, params.means, params.covariances)
    return log_gaussian_full(image, params.means, params.covariances)


def _masked_mean(values: torch.Tensor, roi: torch.Tensor) -> torch.Tensor:
    """Mean of ``(B, ...)`` values over ``roi`` (same shape, bool) -> ``(B,)``."""
    dims = tuple(range(1, values.ndim))
    safe = torch.where(roi, values, torch.zeros((), dtype=values.dtype, device=values.device))
    return safe.sum(dim=dims) / roi.sum(dim=dims).to(values.dtype).clamp_min(1.0)


def gmm_log_joint(image: torch.Tensor, params: MixtureParams) -> torch.Tensor:
    """``(B, K, ...)`` log pi_k + log N(x_n; mu_k, Sigma_k) for ``image (B, M, H, W)``
    (or packed ``(B, M, 1, N)``)."""
    log_w = params.weights.clamp_min(torch.finfo(params.weights.dtype).tiny).log()
    return log_densities(image, params) + log_w[..., None, None]


def _check_gradient(gradient: str) -> None:
    if gradient not in ("closed_form", "autograd"):
        raise InputError(f"gradient must be 'closed_form' or 'autograd', got {gradient!r}")


def _closed_form(maps: torch.Tensor, x: torch.Tensor, mask: torch.Tensor, n_roi: torch.Tensor,
                 *, var_floor: float, spatially_variant: bool,
                 ) -> tuple[torch.Tensor, MixtureParams]:
    """The diagonal losses through :func:`deepgmm.mixture.closed_form.diag_mixture_nll`."""
    nll, weights, means, variances = diag_mixture_nll(
        maps, x, mask, n_roi.to(maps.dtype), var_floor=var_floor,
        spatially_variant=spatially_variant, mass_eps=_mass_eps(maps.dtype))
    return nll, MixtureParams(weights=weights, means=means, covariances=variances)


def gmm_nll(resp: torch.Tensor, image: torch.Tensor, roi: torch.Tensor, *,
            covariance: Covariance = "diag", var_floor: float = DEFAULT_VAR_FLOOR,
            validate: bool = True, gradient: Gradient = "closed_form",
            ) -> tuple[torch.Tensor, MixtureParams]:
    """deepG loss: GMM negative log-likelihood with parameters from the M-step.

    ``NLL = -(1/|Omega|) sum_n log sum_k pi_k N(x_n; mu_k, Sigma_k)``, computed on the
    ROI pixels only (packed, see :func:`pack_roi`).

    Args:
        resp: ``(B, K, H, W)`` responsibilities (the network's softmax).
        image: ``(B, M, H, W)``.
        roi: ``(B, H, W)`` bool.
        covariance: ``"diag"`` or ``"full"``.
        var_floor: added to every variance (> 0).
        validate: run :func:`check_inputs` first.
        gradient: ``"closed_form"`` (diagonal covariances: the backward pass of
            :mod:`deepgmm.mixture.closed_form`, a few kernels) or ``"autograd"`` (autograd
            through the formulas; always used for full covariances).

    Returns:
        ``(nll (B,), params)``.

    Raises:
        InputError: bad shapes, options or values (see :func:`check_inputs`).
    """
    return _nll(resp, image, roi, spatially_variant=False, covariance=covariance,
                var_floor=var_floor, validate=validate, gradient=gradient)


def gmm_nll_packed(resp: torch.Tensor, packed: PackedROI, *,
                   covariance: Covariance = "diag", var_floor: float = DEFAULT_VAR_FLOOR,
                   validate: bool = True, gradient: Gradient = "closed_form",
                   ) -> tuple[torch.Tensor, MixtureParams]:
    """:func:`gmm_nll` with the image and ROI packed beforehand by :func:`pack_image`.

    Args:
        resp: ``(B, K, H, W)`` responsibilities.
        packed: the slices' packed ROI pixels.
        covariance, var_floor, gradient: as in :func:`gmm_nll`.
        validate: check ``resp`` for non-finite values inside the ROI.

    Returns:
        ``(nll (B,), params)``.
    """
    return _packed_nll(resp, packed, spatially_variant=False, covariance=covariance,
                       var_floor=var_floor, validate=validate, gradient=gradient)


def svgmm_nll(log_resp: torch.Tensor, image: torch.Tensor, roi: torch.Tensor, *,
              covariance: Covariance = "diag", var_floor: float = DEFAULT_VAR_FLOOR,
              validate: bool = True, gradient: Gradient = "closed_form",
              ) -> tuple[torch.Tensor, MixtureParams]:
    """deepSVG loss: spatially variant GMM negative log-likelihood.

    ``NLL_V = -(1/|Omega|) sum_n log sum_k p_nk N(x_n; mu_k, Sigma_k)`` with the per-pixel
    weights p_nk given as log-probabilities (e.g. ``log_softmax`` of the network's logits);
    means and (co)variances come from the M-step with the same p_nk. Computed on the ROI
    pixels only (packed, see :func:`pack_roi`).

    Args:
        log_resp: ``(B, K, H, W)`` log p_nk (``-inf`` allowed for p_nk = 0).
        image: ``(B, M, H, W)``.
        roi: ``(B, H, W)`` bool.
        covariance: ``"diag"`` or ``"full"``.
        var_floor: added to every variance (> 0).
        validate: run :func:`check_inputs` first.
        gradient: ``"closed_form"`` or ``"autograd"``, as in :func:`gmm_nll`.

    Returns:
        ``(nll (B,), params)``; ``params.weights`` holds the ROI-mean of p_nk.

    Raises:
        InputError: bad shapes, options or values (see :func:`check_inputs`).
    """
    return _nll(log_resp, image, roi, spatially_variant=True, covariance=covariance,
                var_floor=var_floor, validate=validate, gradient=gradient)


def svgmm_nll_packed(log_resp: torch.Tensor, packed: PackedROI, *,
                     covariance: Covariance = "diag", var_floor: float = DEFAULT_VAR_FLOOR,
                     validate: bool = True, gradient: Gradient = "closed_form",
                     ) -> tuple[torch.Tensor, MixtureParams]:
    """:func:`svgmm_nll` with the image and ROI packed beforehand by :func:`pack_image`.

    Args:
        log_resp: ``(B, K, H, W)`` log p_nk.
        packed: the slices' packed ROI pixels.
        covariance, var_floor, gradient: as in :func:`svgmm_nll`.
        validate: check ``log_resp`` for NaN / +inf inside the ROI.

    Returns:
        ``(nll (B,), params)``.
    """
    return _packed_nll(log_resp, packed, spatially_variant=True, covariance=covariance,
                       var_floor=var_floor, validate=validate, gradient=gradient)


def _nll(maps: torch.Tensor, image: torch.Tensor, roi: torch.Tensor, *,
         spatially_variant: bool, covariance: str, var_floor: float, validate: bool,
         gradient: str) -> tuple[torch.Tensor, MixtureParams]:
    """Check the shapes, pack the ROI and evaluate :func:`_packed_nll` (which checks the
    options)."""
    _check_shapes(image, roi, maps, _maps_name(spatially_variant))
    packed = pack_image(image, roi, n_components=maps.shape[1], validate=validate)
    return _packed_nll(maps, packed, spatially_variant=spatially_variant,
                       covariance=covariance, var_floor=var_floor, validate=validate,
                       gradient=gradient)


def _maps_name(spatially_variant: bool) -> str:
    return "log_resp" if spatially_variant else "resp"


def _packed_nll(maps: torch.Tensor, packed: PackedROI, *, spatially_variant: bool,
                covariance: str, var_floor: float, validate: bool,
                gradient: str) -> tuple[torch.Tensor, MixtureParams]:
    """deepG (``maps`` = p) or deepSVG (``maps`` = log p) loss on packed ROI pixels."""
    _check_options(covariance, var_floor)
    _check_gradient(gradient)
    packed_maps = _packed_maps(maps, packed, maps_name=_maps_name(spatially_variant),
                               log_maps=spatially_variant, validate=validate)
    x, mask = packed.x, packed.mask
    if covariance == "diag" and gradient == "closed_form":
        return _closed_form(packed_maps, x, mask, packed.n_roi, var_floor=var_floor,
                            spatially_variant=spatially_variant)
    if spatially_variant:  # log p -> p, exactly 0 on padding
        p = torch.where(mask.unsqueeze(1), packed_maps.exp(),
                        torch.zeros((), dtype=maps.dtype, device=maps.device))
    else:
        p = packed_maps
    params = m_step_packed(p, x, packed.n_roi.to(maps.dtype), covariance=covariance,
                           var_floor=var_floor)
    if spatially_variant:
        log_mix = torch.logsumexp(packed_maps + log_densities_packed(x, params), dim=1)
    else:
        log_mix = torch.logsumexp(gmm_log_joint(x.unsqueeze(2), params), dim=1).squeeze(1)
    return -_masked_mean(log_mix, mask), params  # log_mix: (B, N)


def mu_penalty(means: torch.Tensor, mu_data: torch.Tensor) -> torch.Tensor:
    """``||mu - mu_data||^2`` per slice.

    Args:
        means: ``(B, K, M)`` fitted means (or ``(K, M)``, e.g. a batch mean).
        mu_data: ``(K, M)`` or ``(B, K, M)`` reference class means.

    Returns:
        ``(B,)`` squared Frobenius distance (a scalar for ``(K, M)`` means).
    """
    return (means - mu_data).square().sum(dim=(-2, -1))
