"""Penalties that pull the fitted variances and weights towards labelled class statistics.

The published deep losses regularise only the class means, ``lam ||mean_b mu_b - mu_data||^2``
over a mini-batch of B slices. With ``prior="all"`` the training loss adds the same kind of
term for the other parameters the M-step fits on each slice, with targets from the labelled
slices of :mod:`deepgmm.data.class_prior`:

    lam_var     * ||mean_b log s2_b - log s2_data||^2           (sum over K classes, M seqs)
    lam_weights * KL(pi_data || mean_b pi_b)
                = lam_weights * sum_k pi_data_k (log pi_data_k - log mean_b pi_bk)

Why these forms and not a per-slice Normal-inverse-Wishart / Dirichlet MAP term:

- like the published mean penalty they act on the mini-batch mean, so each slice keeps its
  own variances and proportions (contrast, myocardium thickness and lesion size differ
  between slices and patients); a per-slice conjugate prior pulls every slice towards one
  value with a strength fixed by pseudo-counts, which is what the per-slice EM needs but
  not what a network shared by all slices needs;
- variances are scale parameters: the squared error of their logarithms treats a factor of
  two too wide and too narrow alike, and is the log-normal prior's negative log-density;
- ``KL(pi_data || pi)`` is, up to a constant, ``-log Dir(pi; 1 + c pi_data) / c``: the
  Dirichlet MAP term whose mode is ``pi_data``, evaluated at the batch-mean weights. It is
  finite for any weights in the open simplex and pushes hardest on a class that is about
  to vanish (small scar / edema), where squared error would hardly push at all.

Everything is differentiable; with the diagonal closed-form loss
(:mod:`deepgmm.mixture.closed_form`) the gradients reach the responsibilities through the
weights and variances it returns.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

PRIORS: tuple[str, ...] = ("means", "all")
"""``"means"``: only the μ_data penalty (published); ``"all"``: also variances and weights."""


def log_variance_penalty(log_variances: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``||log s2 - log s2_data||^2``.

    Args:
        log_variances: ``(..., K, M)`` fitted log variances (e.g. a batch mean ``(K, M)``).
        target: ``(K, M)`` labelled log variances.

    Returns:
        ``(...)`` squared Frobenius distance (a scalar for ``(K, M)`` input).
    """
    return (log_variances - target).square().sum(dim=(-2, -1))


def weight_penalty(weights: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``KL(pi_data || pi) = sum_k pi_data_k (log pi_data_k - log pi_k)``.

    Args:
        weights: ``(..., K)`` fitted mixing proportions (e.g. a batch mean ``(K,)``).
        target: ``(K,)`` labelled proportions, all > 0.

    Returns:
        ``(...)`` KL divergence (0 exactly when ``weights == target``).
    """
    tiny = torch.finfo(weights.dtype).tiny
    return (target * (target.log() - weights.clamp_min(tiny).log())).sum(dim=-1)


@dataclass(frozen=True)
class ParameterPrior:
    """The variance and weight penalties of ``prior="all"`` with their targets and weights.

    Attributes:
        log_variances: ``(K, M)`` target log variances.
        weights: ``(K,)`` target proportions.
        lam_var: weight of :func:`log_variance_penalty`.
        lam_weights: weight of :func:`weight_penalty`.
    """

    log_variances: torch.Tensor
    weights: torch.Tensor
    lam_var: float
    lam_weights: float

    def penalty(self, weights: torch.Tensor, variances: torch.Tensor, *,
                per_slice: bool = False) -> torch.Tensor:
        """Scalar penalty of a mini-batch's fitted ``weights (B, K)`` and diagonal
        ``variances (B, K, M)``: on the batch means (as the published mean penalty,
        ``penalty="batch"``), or the mean over slices of each slice's penalty
        (``per_slice=True``, as ``penalty="slice"``)."""
        log_var = variances.log()
        if per_slice:
            var_term = log_variance_penalty(log_var, self.log_variances).mean()
            weight_term = weight_penalty(weights, self.weights).mean()
        else:
            var_term = log_variance_penalty(log_var.mean(dim=0), self.log_variances)
            weight_term = weight_penalty(weights.mean(dim=0), self.weights)
        return self.lam_var * var_term + self.lam_weights * weight_term
