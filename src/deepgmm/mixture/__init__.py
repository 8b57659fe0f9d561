"""Gaussian mixtures: log-densities, the deepG/deepSVG likelihoods and the EM baselines."""

from deepgmm.mixture.em import GaussianMixtureEM, SpatiallyVariantEM, em_segment
from deepgmm.mixture.likelihood import (
    DEFAULT_VAR_FLOOR,
    MixtureParams,
    PackedROI,
    check_inputs,
    gmm_nll,
    gmm_nll_packed,
    m_step,
    mu_penalty,
    pack_image,
    svgmm_nll,
    svgmm_nll_packed,
)

__all__ = [
    "DEFAULT_VAR_FLOOR",
    "GaussianMixtureEM",
    "MixtureParams",
    "PackedROI",
    "SpatiallyVariantEM",
    "check_inputs",
    "em_segment",
    "gmm_nll",
    "gmm_nll_packed",
    "m_step",
    "mu_penalty",
    "pack_image",
    "svgmm_nll",
    "svgmm_nll_packed",
]
