"""Gaussian mixtures: log-densities, the deepG/deepSVG likelihoods and the EM baselines."""

from deepgmm.mixture.em import GaussianMixtureEM, SpatiallyVariantEM, em_segment
from deepgmm.mixture.likelihood import (
    DEFAULT_VAR_FLOOR,
    MixtureParams,
    check_inputs,
    gmm_nll,
    m_step,
    mu_penalty,
    svgmm_nll,
)

__all__ = [
    "DEFAULT_VAR_FLOOR",
    "GaussianMixtureEM",
    "MixtureParams",
    "SpatiallyVariantEM",
    "check_inputs",
    "em_segment",
    "gmm_nll",
    "m_step",
    "mu_penalty",
    "svgmm_nll",
]
