"""Ensembles of trained runs: the class probabilities of several networks averaged, as
``nnUNetv2_ensemble`` averages the softmax outputs of several models.

Every run must segment the same way for the mean to mean something: the same sequences in
the same order, the same crop and normalisation (the slices are prepared once), and class
identity fixed by μ_data (``lam > 0``), so that channel k is class k in every run.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from deepgmm.errors import InputError
from deepgmm.types import SegmentationResult, SliceBatch

SHARED_KEYS: tuple[str, ...] = ("sequences", "crop_size", "normalisation")
"""Settings of ``config.json`` that every run of an ensemble must share."""


def check_ensemble(configs: Sequence[dict[str, Any]],
                   runs: Sequence[str | os.PathLike[str]]) -> None:
    """Refuse runs that cannot be averaged: differing :data:`SHARED_KEYS`, or a run
    without class identity (no μ_data or ``lam == 0``).

    Raises:
        InputError: naming the run and the setting.
    """
    if len(configs) < 2:
        return
    first = configs[0]
    for run, config in zip(runs, configs, strict=True):
        for key in SHARED_KEYS:
            if config.get(key) != first.get(key):
                raise InputError(f"run {str(run)!r} has {key} {config.get(key)!r} but "
                                 f"{str(runs[0])!r} has {first.get(key)!r}: an ensemble "
                                 f"needs runs that share {', '.join(SHARED_KEYS)}")
        if config.get("mu_data") is None or not float(config.get("lam", 0.0)) > 0:
            raise InputError(f"run {str(run)!r} was trained without μ_data (lam > 0), so "
                             "its class order is arbitrary: an ensemble averages classes "
                             "in one order")


def average_results(results: Sequence[SegmentationResult]) -> SegmentationResult:
    """The mean of several runs' results on one batch.

    Args:
        results: R results with responsibilities ``(B, K, H, W)`` in one class order.

    Returns:
        Responsibilities, NLL and means averaged over the runs, iterations and seconds
        summed; ``method`` ``"ensemble(<m1>+<m2>...)"`` (one result is returned as is).
    """
    if len(results) == 1:
        return results[0]
    shapes = {tuple(r.responsibilities.shape) for r in results}
    if len(shapes) != 1:
        raise InputError(f"the runs' probabilities have different shapes {sorted(shapes)}")

    def stack(name: str) -> torch.Tensor:
        return torch.stack([torch.as_tensor(getattr(r, name)).to(torch.float64)
                            for r in results])

    resp = stack("responsibilities").mean(dim=0).to(results[0].responsibilities.dtype)
    return SegmentationResult(
        responsibilities=resp, nll=stack("nll").mean(dim=0),
        n_iter=stack("n_iter").sum(dim=0).to(torch.int64),
        seconds=stack("seconds").sum(dim=0), means=stack("means").mean(dim=0),
        method="ensemble(" + "+".join(r.method for r in results) + ")")


def predict_ensemble(runs: Sequence[str | os.PathLike[str]], batch: SliceBatch,
                     **predict_options: Any) -> SegmentationResult:
    """Apply every run to ``batch`` with :func:`deepgmm.fit.predict.predict` and average
    the class probabilities (:func:`average_results`); ``fusion="labelled"`` fuses the
    mean with the runs' labelled class Gaussians (:func:`deepgmm.fit.predict.fuse_result`)."""
    from deepgmm.fit.checkpoint import read_config
    from deepgmm.fit.predict import fuse_result, predict

    configs = [read_config(r) for r in runs]
    check_ensemble(configs, runs)
    fusion = predict_options.pop("fusion", "none")
    mean = average_results([predict(r, batch, **predict_options) for r in runs])
    return fuse_result(mean, batch, configs, runs, fusion)
