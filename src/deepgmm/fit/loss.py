"""The deepG / deepSVG loss of a network's output: the one place it is written.

Per-slice fitting (:mod:`deepgmm.fit.single`, also the refinement of
:func:`deepgmm.fit.predict.predict`), training (:mod:`deepgmm.fit.train`) and prediction all
turn logits ``(N, K, H, W)`` into a per-slice NLL here:

    deepG:    NLL   = gmm_nll(softmax(logits))       (GMM, weights pi_k per slice)
    deepSVG:  NLL_V = svgmm_nll(log_softmax(logits)) (spatially variant: weights p_nk)

each with its closed-form M-step inside (:mod:`deepgmm.mixture.likelihood`), plus the
μ_data penalty ``lam * ||mu - mu_data||^2``. The mixture maths stays in ``mixture/``, shared
with EM; this module owns what is specific to the deep models: which likelihood a model
name means, how the network's output enters it, and how the penalty is added.

deepG's responsibilities are ``softmax(logits)`` when fitting per slice
(:func:`nll_of_logits`) and ``exp(log_softmax(logits))`` in training and prediction
(:func:`nll_of_log_resp`, which also serves test-time augmentation's averaged
log-probabilities); the two agree to float rounding, and each path is kept as it was so that
seeded results stay bit for bit the same.
"""

from __future__ import annotations

from typing import Literal

import torch

from deepgmm.mixture.likelihood import (
    MixtureParams,
    PackedROI,
    gmm_nll_packed,
    mu_penalty,
    pack_image,
    svgmm_nll_packed,
)

__all__ = ["MODELS", "PENALTIES", "Model", "batch_loss", "network_nll", "nll_of_log_resp",
           "nll_of_logits", "pack_slices", "slice_loss"]

Model = Literal["deepg", "deepsvg"]
MODELS: tuple[str, ...] = ("deepg", "deepsvg")
PENALTIES: tuple[str, ...] = ("batch", "slice")


def pack_slices(image: torch.Tensor, roi: torch.Tensor, n_classes: int | None = None, *,
                validate: bool = True) -> PackedROI:
    """The ROI pixels of ``image (N, M, H, W)`` under ``roi (N, H, W)`` packed once, for the
    losses below (checks the image unless ``validate`` is False)."""
    return pack_image(image, roi, n_components=n_classes, validate=validate)


def nll_of_logits(logits: torch.Tensor, packed: PackedROI, model: str, *,
                  validate: bool = True) -> tuple[torch.Tensor, MixtureParams]:
    """Per-slice NLL of float32 ``logits (N, K, H, W)`` (per-slice fitting).

    Returns:
        ``(nll (N,), mixture parameters)``; deepG from ``softmax(logits)``, deepSVG from
        ``log_softmax(logits)``.
    """
    if model == "deepg":
        return gmm_nll_packed(logits.softmax(dim=1), packed, validate=validate)
    return svgmm_nll_packed(logits.log_softmax(dim=1), packed, validate=validate)


def nll_of_log_resp(log_resp: torch.Tensor, packed: PackedROI, model: str, *,
                    validate: bool = True) -> tuple[torch.Tensor, MixtureParams]:
    """Per-slice NLL of log class probabilities ``log_resp (N, K, H, W)`` (training,
    prediction).

    Returns:
        ``(nll (N,), mixture parameters)``; deepG from ``exp(log_resp)``, deepSVG from
        ``log_resp``.
    """
    if model == "deepg":
        return gmm_nll_packed(log_resp.exp(), packed, validate=validate)
    return svgmm_nll_packed(log_resp, packed, validate=validate)


def network_nll(network: torch.nn.Module, image: torch.Tensor, roi: torch.Tensor,
                model: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward pass and per-slice NLL of a network, inputs checked.

    Args:
        network: maps ``(N, M, H, W)`` to ``(N, K, H, W)`` logits.
        image: ``(N, M, H, W)``.
        roi: ``(N, H, W)`` bool.
        model: ``"deepg"`` or ``"deepsvg"``.

    Returns:
        ``(nll (N,), responsibilities (N, K, H, W), means (N, K, M))``.
    """
    log_resp = torch.log_softmax(network(image), dim=1)
    packed = pack_slices(image, roi, int(log_resp.shape[1]))
    nll, mixture = nll_of_log_resp(log_resp, packed, model)
    return nll, log_resp.exp(), mixture.means


def slice_loss(nll: torch.Tensor, means: torch.Tensor, *, lam: float,
               mu_data: torch.Tensor | None) -> torch.Tensor:
    """``(N,)`` per-slice loss ``nll + lam * ||mu - mu_data||^2`` (just ``nll`` without
    ``mu_data``).

    Args:
        nll: ``(N,)``.
        means: ``(N, K, M)`` fitted class means.
        lam: penalty weight.
        mu_data: ``(K, M)`` or ``(N, K, M)`` reference means, or None.
    """
    return nll if mu_data is None else nll + lam * mu_penalty(means, mu_data)


def batch_loss(nll: torch.Tensor, means: torch.Tensor, *, lam: float,
               mu_data: torch.Tensor | None, penalty: str = "batch",
               extra: torch.Tensor | None = None) -> torch.Tensor:
    """Scalar loss of a training mini-batch: ``mean_b nll_b`` (+ ``extra``) + the penalty.

    Args:
        nll: ``(N,)`` per-slice NLL.
        means: ``(N, K, M)`` per-slice class means.
        lam: penalty weight (0: none).
        mu_data: ``(K, M)`` reference means, or None (no penalty).
        penalty: ``"batch"`` (published): ``lam * ||mean_b mu_b - mu_data||^2``;
            ``"slice"``: ``lam * mean_b ||mu_b - mu_data||^2``.
        extra: a scalar added before the penalty (the labelled slices' cross-entropy).
    """
    loss = nll.mean()
    if extra is not None:
        loss = loss + extra
    if mu_data is not None and lam != 0:
        if penalty == "batch":
            loss = loss + lam * mu_penalty(means.mean(dim=0), mu_data)
        else:
            loss = loss + lam * mu_penalty(means, mu_data).mean()
    return loss
