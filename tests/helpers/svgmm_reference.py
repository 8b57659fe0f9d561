"""A slow, obvious NumPy reference of EM for the spatially variant GMM (one slice).

Written from the model's equations, pixel by pixel and component by component, with no
shared code with :mod:`deepgmm.mixture`, so the batched estimator can be checked against
it. Notation: x_n the M features of ROI pixel n (n = 1..N), K components with means mu_k
and (co)variances Sigma_k.

- GMM EM (the initialisation): global weights pi_k;
  E-step ``r_nk = pi_k N_k(x_n) / sum_j pi_j N_j(x_n)``; M-step ``N_k = sum_n r_nk``,
  ``pi_k = N_k / N``, ``mu_k = sum_n r_nk x_n / N_k``, ``Sigma_k = sum_n r_nk (x_n - mu_k)
  (x_n - mu_k)^T / N_k + floor I`` (diagonal: its diagonal). The per-pixel weights start as
  the posteriors ``w_nk = r_nk`` under the last GMM parameters.
- SVGMM EM: M-step of mu_k and Sigma_k from w (as above with r = w); E-step
  ``w_nk <- w_nk N_k(x_n) / sum_j w_nj N_j(x_n)``; its loss
  ``NLL_V = -1/N sum_n log sum_k w_nk N_k(x_n)`` with the weights before the update.

As scikit-learn and the library, N_k gets 10 machine epsilons added before dividing.
"""

from __future__ import annotations

import math

import numpy as np

EPS = 10 * np.finfo(np.float64).eps


def gaussian_density(x: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> float:
    """N(x; mean, cov) of one ``(M,)`` point, ``cov`` ``(M, M)``."""
    m = x.shape[0]
    diff = x - mean
    quad = float(diff @ np.linalg.solve(cov, diff))
    return math.exp(-0.5 * quad) / math.sqrt((2 * math.pi) ** m * np.linalg.det(cov))


def m_step(resp: np.ndarray, x: np.ndarray, floor: float, diag: bool,
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(weights (K,), means (K, M), covariances (K, M, M))`` from ``resp (N, K)``,
    ``x (N, M)``."""
    n, k = resp.shape
    m = x.shape[1]
    weights = np.zeros(k)
    means = np.zeros((k, m))
    covs = np.zeros((k, m, m))
    for j in range(k):
        mass = sum(resp[i, j] for i in range(n))
        weights[j] = mass / n
        means[j] = sum(resp[i, j] * x[i] for i in range(n)) / (mass + EPS)
        scatter = sum(resp[i, j] * np.outer(x[i] - means[j], x[i] - means[j])
                      for i in range(n))
        covs[j] = scatter / (mass + EPS)
        if diag:
            covs[j] = np.diag(np.diag(covs[j]))
        covs[j] += floor * np.eye(m)
    return weights, means, covs


def posteriors(x: np.ndarray, prior: np.ndarray, means: np.ndarray, covs: np.ndarray,
               ) -> tuple[np.ndarray, float]:
    """``(w_new (N, K), mean log-likelihood)`` for per-pixel priors ``prior (N, K)``."""
    n, k = prior.shape
    new = np.zeros((n, k))
    total = 0.0
    for i in range(n):
        joint = [prior[i, j] * gaussian_density(x[i], means[j], covs[j]) for j in range(k)]
        evidence = sum(joint)
        new[i] = np.array(joint) / evidence
        total += math.log(evidence)
    return new, total / n


def svgmm_em(x: np.ndarray, weights: np.ndarray, means: np.ndarray, covs: np.ndarray, *,
             gmm_iter: int, sv_iter: int, floor: float, diag: bool) -> dict[str, np.ndarray]:
    """Run ``gmm_iter`` GMM iterations from ``(weights, means, covs)``, then ``sv_iter``
    SVGMM iterations.

    Args:
        x: ``(N, M)`` ROI pixels.
        weights, means, covs: ``(K,)``, ``(K, M)``, ``(K, M, M)`` initial GMM parameters.

    Returns:
        ``means (K, M)``, ``covariances (K, M, M)``, ``weights (K,)`` (the mean of w
        before the last E-step, from the last M-step), ``pixel_weights (N, K)``,
        ``lower_bounds (sv_iter,)`` (-NLL_V per iteration) and ``gmm_lower_bounds``.
    """
    n = x.shape[0]
    gmm_bounds = []
    for _ in range(gmm_iter):
        resp, bound = posteriors(x, np.tile(weights, (n, 1)), means, covs)
        gmm_bounds.append(bound)
        weights, means, covs = m_step(resp, x, floor, diag)
    w, _ = posteriors(x, np.tile(weights, (n, 1)), means, covs)
    weights, means, covs = m_step(w, x, floor, diag)
    bounds = []
    for _ in range(sv_iter):
        w, bound = posteriors(x, w, means, covs)
        bounds.append(bound)
        weights, means, covs = m_step(w, x, floor, diag)
    return {"means": means, "covariances": covs, "weights": weights, "pixel_weights": w,
            "lower_bounds": np.array(bounds), "gmm_lower_bounds": np.array(gmm_bounds)}
