"""Several Gaussian components per class: grouping component parameters into classes.

With ``J`` components per class the network outputs ``C = K * J`` channels; component
``c`` belongs to class ``c // J`` (the components of a class are adjacent). The mixture is
fitted over the C components as usual; a class's probability is the sum of its
components' probabilities, and its parameters are those of the J-component mixture it
forms. With mass ``w_j`` (weight), mean ``mu_j`` and variance ``s2_j`` of component j:

    w = sum_j w_j,   mu = sum_j w_j mu_j / w,   s2 = sum_j w_j (s2_j + mu_j^2) / w - mu^2

(the law of total variance). These are what the μ_data penalty and the class prior act on.
Everything is differentiable and vectorised; ``J = 1`` returns the inputs' values.
"""

from __future__ import annotations

import torch

from deepgmm.mixture.likelihood import MixtureParams


def _check(channels: int, per_class: int) -> int:
    if per_class < 1 or channels % per_class:
        raise ValueError(f"{channels} components cannot be split into classes of "
                         f"{per_class}")
    return channels // per_class


def class_probabilities(resp: torch.Tensor, per_class: int) -> torch.Tensor:
    """``(B, K, ...)`` class probabilities: sums of ``(B, K * J, ...)`` component ones."""
    if per_class == 1:
        return resp
    b, c = resp.shape[:2]
    k = _check(c, per_class)
    return resp.reshape(b, k, per_class, *resp.shape[2:]).sum(dim=2)


def class_log_probabilities(log_resp: torch.Tensor, per_class: int) -> torch.Tensor:
    """``(B, K, ...)`` log class probabilities: log-sum-exp of ``(B, K * J, ...)`` log
    component ones (``log_resp`` itself when ``J = 1``)."""
    if per_class == 1:
        return log_resp
    b, c = log_resp.shape[:2]
    k = _check(c, per_class)
    return torch.logsumexp(log_resp.reshape(b, k, per_class, *log_resp.shape[2:]), dim=2)


def class_weights(weights: torch.Tensor, per_class: int) -> torch.Tensor:
    """``(B, K)`` class weights from ``(B, K * J)`` component weights."""
    return class_probabilities(weights, per_class)


def class_moments(weights: torch.Tensor, means: torch.Tensor, variances: torch.Tensor,
                  per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of each class's component mixture.

    Args:
        weights: ``(B, K * J)`` component weights.
        means: ``(B, K * J, M)`` component means.
        variances: ``(B, K * J, M)`` diagonal component variances.
        per_class: J.

    Returns:
        ``(means (B, K, M), variances (B, K, M))``; a class with no mass gets the plain
        average of its components.
    """
    b, c, m = means.shape
    k = _check(c, per_class)
    w = weights.reshape(b, k, per_class, 1)
    mass = w.sum(dim=2, keepdim=True)  # (B, K, 1, 1)
    tiny = torch.finfo(weights.dtype).tiny
    share = torch.where(mass > tiny, w / mass.clamp_min(tiny),
                        torch.full_like(w, 1.0 / per_class))  # (B, K, J, 1)
    mu = means.reshape(b, k, per_class, m)
    class_mean = (share * mu).sum(dim=2)
    second = (share * (variances.reshape(b, k, per_class, m) + mu.square())).sum(dim=2)
    return class_mean, second - class_mean.square()


def class_params(params: MixtureParams, per_class: int) -> MixtureParams:
    """The classes' weights, means and diagonal variances (:func:`class_moments`) from a
    fit over ``K * J`` components; ``params`` itself when ``J = 1``."""
    if per_class == 1:
        return params
    means, variances = class_moments(params.weights, params.means, params.covariances,
                                     per_class)
    return MixtureParams(weights=class_weights(params.weights, per_class), means=means,
                         covariances=variances)
