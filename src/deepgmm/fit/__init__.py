"""Fitting deepG / deepSVG networks: a network per slice (:mod:`deepgmm.fit.single`) or one
network trained on many slices (:mod:`deepgmm.fit.train`)."""

from deepgmm.fit.single import fit_slices

__all__ = ["fit_slices"]
