"""deepG / deepSVG on single slices: a fresh network per slice, many slices fitted at once.

For each slice a U-Net f_theta maps the cropped image to K logits per pixel and is fitted
to that slice alone by minimising

    deepG:    NLL   = gmm_nll(softmax(f_theta(x)))
    deepSVG:  NLL_V = svgmm_nll(log_softmax(f_theta(x)))
    (+ lam * ||mu - mu_data||^2 when lam > 0)

with AdamW, the gradient norm clipped per slice, until |NLL_t - NLL_{t-1}| < tol after
``min_iter`` iterations or ``max_iter`` iterations (the published single-image recipe). The
loss is :mod:`deepgmm.fit.loss`'s.

Many slices run simultaneously (see :mod:`deepgmm.fit.stacked`): every slice has its own
network, optimiser state, clipping and stopping rule. A slice that stops leaves the running
batch at once and a waiting slice takes its place, so a whole data set is one call and at
most ``concurrent`` networks are in memory. A slice's network is initialised from
``(seed, case id, slice index)``, so its result does not depend on which other slices
shared its batch.

This module checks the inputs and sets the fit up; :mod:`deepgmm.fit.scheduler` runs it
(queue, out-of-memory handling, stopping, results) and one stepper per mechanism
(:mod:`deepgmm.fit.steppers`) computes each iteration.

The reported NLL, responsibilities and means of a slice all come from the last network
evaluated (the one whose NLL met the stopping rule).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Literal

import numpy as np
import torch

from deepgmm.allocator import tune_cpu_allocator
from deepgmm.data.mu_data import check_mu_data
from deepgmm.device import resolve_device
from deepgmm.errors import InputError
from deepgmm.fit import stacked
from deepgmm.fit.loss import MODELS
from deepgmm.fit.precision import network_autocast
from deepgmm.fit.schedule import LRSchedule
from deepgmm.fit.scheduler import (
    Observer,
    RunningSlices,
    SliceOutputs,
    SliceQueue,
    StoppingRule,
    run_slices,
)
from deepgmm.fit.stacked import StackedFit
from deepgmm.fit.steppers import OptimiserSettings, make_stepper
from deepgmm.options import FitOptions
from deepgmm.types import SegmentationResult, SliceBatch

__all__ = ["DEFAULT_CONCURRENT", "MODELS", "fit_slices"]

log = logging.getLogger(__name__)

Model = Literal["deepg", "deepsvg"]

DEFAULT_CONCURRENT = {"cpu": 8, "cuda": 64}
"""Most slices fitted at once when ``concurrent`` is None, per device type."""


def _check_shapes(batch: SliceBatch) -> None:
    """Raise :class:`InputError` unless ``image (B, M, H, W)`` and ``roi (B, H, W)`` agree."""
    image, roi = batch.image, batch.roi
    if not isinstance(image, torch.Tensor) or image.ndim != 4:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise InputError(f"batch.image must be a (B, M, H, W) tensor, got {shape}")
    b, m, h, w = image.shape
    if b == 0 or m == 0:
        raise InputError(f"batch.image holds no slices or no sequences: {tuple(image.shape)}")
    if not isinstance(roi, torch.Tensor) or tuple(roi.shape) != (b, h, w):
        shape = tuple(roi.shape) if isinstance(roi, torch.Tensor) else type(roi).__name__
        raise InputError(f"batch.roi must be (B, H, W) = {(b, h, w)}, got {shape}")
    if len(batch.case_ids) != b or len(batch.slice_indices) != b:
        raise InputError(f"batch.case_ids and batch.slice_indices must have B = {b} entries, "
                         f"got {len(batch.case_ids)} and {len(batch.slice_indices)}")
    if not image.is_floating_point():
        raise InputError(f"batch.image must be floating point, got {image.dtype}")


def _check_values(batch: SliceBatch, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Finite images, ROIs of at least K pixels; ``image (B, M, H, W)`` float32, ``roi (B, H,
    W)`` bool."""
    image = batch.image.to(torch.float32)
    roi = batch.roi.to(torch.bool)
    bad = ~torch.isfinite(image).all(dim=(1, 2, 3))
    if bad.any():
        i = int(bad.nonzero()[0, 0])
        raise InputError(f"case {batch.case_ids[i]} slice {batch.slice_indices[i]}: the image "
                         f"holds NaN or infinite values")
    counts = roi.sum(dim=(1, 2))
    small = counts < k
    if small.any():
        i = int(small.nonzero()[0, 0])
        raise InputError(f"case {batch.case_ids[i]} slice {batch.slice_indices[i]}: the ROI has "
                         f"{int(counts[i])} pixels, fewer than the K = {k} classes to fit")
    return image, roi


def _net_config(net_config: Mapping[str, Any] | None, in_channels: int) -> dict[str, Any]:
    config: dict[str, Any] = dict(net_config or {})
    if "in_channels" in config and config["in_channels"] != in_channels:
        raise InputError(f"net_config in_channels = {config['in_channels']} but the batch has "
                         f"{in_channels} sequences")
    config["in_channels"] = in_channels
    config.setdefault("n_classes", 4)
    allowed = {"in_channels", "n_classes", "depth", "base_filters", "negative_slope"}
    unknown = sorted(set(config) - allowed)
    if unknown:
        raise InputError(f"net_config has unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    stacked.template(config)  # validates the values
    return config


def _mu_data(mu_data: Any, b: int, k: int, m: int, device: torch.device) -> torch.Tensor:
    """``(B, K, M)`` reference means on ``device`` (lam > 0)."""
    if mu_data is None:
        raise InputError("lam > 0 needs mu_data (the (K, M) class means to pull towards)")
    return check_mu_data(mu_data, k, m, n_slices=b).to(device)


def fit_slices(batch: SliceBatch, *, model: Model = "deepg", lam: float = 0.0,
               mu_data: torch.Tensor | np.ndarray | None = None, tol: float = 1e-3,
               min_iter: int = 10, max_iter: int = 200, lr: float = 1e-4,
               weight_decay: float = 1e-3, clip_norm: float | None = 12.0, seed: int = 0,
               device: str | torch.device = "auto", concurrent: int | None = None,
               net_config: Mapping[str, Any] | None = None,
               init_state: Mapping[str, torch.Tensor] | None = None,
               progress: bool = True, mechanism: str = "auto",
               precision: str = "fp32", stop: str = "published", label_tol: float = 1e-3,
               label_window: int = 5, lr_warmup: int = 0, lr_half_life: float = 0.0,
               channels_last: bool = False,
               observe: Observer | None = None) -> SegmentationResult:
    """Fit a fresh deepG or deepSVG network to every slice of ``batch``.

    Args:
        batch: B slices; ``image (B, M, H, W)``, ``roi (B, H, W)``; H and W divisible by
            ``2 ** depth``. ``case_ids`` and ``slice_indices`` seed each slice's network.
        model: ``"deepg"`` (GMM likelihood) or ``"deepsvg"`` (spatially variant GMM).
        lam: weight of ``||mu - mu_data||^2``; with ``lam > 0`` class k is pulled towards
            ``mu_data[k]``, which fixes the class order. 0 switches it off.
        mu_data: ``(K, M)`` or ``(B, K, M)`` reference class means; needed when ``lam > 0``.
        tol: a slice stops when ``|NLL_t - NLL_{t-1}| < tol`` (NLL without the penalty) ...
        min_iter: ... and more than ``min_iter`` iterations have run.
        max_iter: most iterations per slice.
        lr, weight_decay: AdamW settings.
        clip_norm: the gradient norm of each slice's network is clipped to this (None: off).
        seed: with the case id and slice index, determines each slice's initialisation.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or a ``torch.device``.
        concurrent: most slices fitted at the same time (a slice that stops is replaced by
            a waiting one); None: ``DEFAULT_CONCURRENT`` for the device type. On CUDA an
            out-of-memory batch is halved and the fit goes on.
        net_config: U-Net options (``n_classes``, ``depth``, ``base_filters``,
            ``negative_slope``); ``in_channels`` comes from the batch. K = ``n_classes``
            (default 4).
        init_state: a state dict of a ``UNet`` with this configuration to start every slice
            from (to refine a trained network per slice); None: fresh initialisation.
        progress: show a progress bar over finished slices.
        mechanism: how the networks run together, ``"auto"``, ``"loop"``, ``"vmap"`` or
            ``"threads"`` (CPU only; see :mod:`deepgmm.fit.stacked`); the results agree to
            float rounding.
        precision: ``"fp32"`` (default) or ``"bf16"``: the networks' convolutions run in
            bfloat16 under ``torch.autocast`` (parameters, optimiser state and the
            likelihood stay float32): an iteration took 0.063 s instead of 0.095 s on a
            2-core CPU with AVX-512 BF16; slightly different results (see
            :mod:`deepgmm.fit.precision`).
        stop: ``"published"``: the ``tol`` rule above; ``"labels"``: a slice stops when
            fewer than a fraction ``label_tol`` of its ROI pixels changed class (argmax of
            the logits) in any of the last ``label_window`` iterations (after more than
            ``min_iter`` iterations; see :class:`deepgmm.fit.scheduler.StoppingRule`).
        label_tol, label_window: the label-map rule's fraction and window.
        lr_warmup, lr_half_life: a learning-rate schedule per slice (its own step count):
            linear warm-up to ``lr`` over ``lr_warmup`` steps, then halved every
            ``lr_half_life`` steps (:class:`deepgmm.fit.schedule.LRSchedule`; 0: off, both
            0: constant ``lr``, the published recipe).
        channels_last: images and activations in channels-last (NHWC) memory order; same
            arithmetic up to float rounding.
        observe: called every iteration with the running slices' indices ``(N,)``, NLL
            ``(N,)`` float64 and logits ``(N, K, H, W)`` (to trace a fit; the benchmarks
            replay stopping rules on the trace).

    Returns:
        :class:`SegmentationResult` (on CPU) with ``responsibilities (B, K, H, W)``
        (softmax of the final logits), ``nll (B,)`` final NLL (NLL_V for deepSVG) without
        the penalty, ``n_iter (B,)``, ``seconds (B,)`` (each iteration's time shared among
        the slices it ran), ``means (B, K, M)`` from the final M-step.

    Raises:
        InputError: bad options, a bad batch, a slice whose ROI has fewer than K pixels.
        FitError: a fit that diverged (non-finite NLL), or a single slice that does not fit
            in the device's memory.
    """
    FitOptions.check({"model": model, "lam": lam, "tol": tol, "min_iter": min_iter,
                      "max_iter": max_iter, "lr": lr, "weight_decay": weight_decay,
                      "clip_norm": clip_norm, "seed": seed, "device": device,
                      "concurrent": concurrent, "mechanism": mechanism,
                      "precision": precision, "stop": stop, "label_tol": label_tol,
                      "label_window": label_window, "lr_warmup": lr_warmup,
                      "lr_half_life": lr_half_life, "channels_last": channels_last},
                     caller="fit_slices")
    lam, tol, lr, weight_decay = float(lam), float(tol), float(lr), float(weight_decay)
    clip_norm = None if clip_norm is None else float(clip_norm)
    min_iter, max_iter, seed = int(min_iter), int(max_iter), int(seed)

    dev = resolve_device(device)
    if dev.type == "cpu":
        tune_cpu_allocator()
    autocast = network_autocast(precision, dev)
    how = stacked.resolve_mechanism(mechanism, dev, precision)
    _check_shapes(batch)
    m = int(batch.image.shape[1])
    config = _net_config(net_config, m)
    k = int(config["n_classes"])
    image, roi = _check_values(batch, k)
    b, _, h, w = image.shape
    net = stacked.template(config)
    net.check_input(image[:1].to("meta"))
    if init_state is not None:
        stacked.check_state(init_state, config)
    mu_ref = None if lam == 0.0 else _mu_data(mu_data, b, k, m, dev)
    limit = concurrent if concurrent is not None else DEFAULT_CONCURRENT.get(dev.type, 8)

    def describe(i: int) -> str:
        return f"case {batch.case_ids[i]} slice {batch.slice_indices[i]}"

    queue = SliceQueue(b, limit, _initial_networks(batch, config, seed, init_state, dev), dev)
    rule = StoppingRule(b, tol, min_iter, max_iter, describe, lr, stop=stop,
                        label_tol=float(label_tol), label_window=int(label_window), roi=roi)
    outputs = SliceOutputs.empty(b, k, m, h, w)
    image_dev = image.to(dev)
    if channels_last:
        image_dev = image_dev.contiguous(memory_format=torch.channels_last)
    data = RunningSlices(image_dev, roi.to(dev), mu_ref, k)
    schedule = LRSchedule(lr, int(lr_warmup), float(lr_half_life))
    settings = OptimiserSettings(model, lam, lr, weight_decay, clip_norm, schedule)
    run_slices(queue, make_stepper(how, net, settings, autocast), data, rule, outputs,
               size=(h, w), progress=progress, desc=f"{model} fit", observe=observe)
    log.info("%s: %d slices, mean %.1f iterations, %.2f s per slice", model, b,
             float(rule.n_iter.double().mean()), float(outputs.seconds.mean()))
    return SegmentationResult(responsibilities=outputs.responsibilities,
                              nll=outputs.nll.float(), n_iter=rule.n_iter,
                              seconds=outputs.seconds, means=outputs.means, method=model)


def _initial_networks(batch: SliceBatch, config: dict[str, Any], seed: int,
                      init_state: Mapping[str, torch.Tensor] | None,
                      device: torch.device) -> Callable[[list[int]], StackedFit]:
    """``fresh(indices)``: the starting networks of the slices at ``indices``, from
    ``init_state`` or drawn from ``(seed, case id, slice index)``."""
    if init_state is not None:
        start = {name: t.detach().to("cpu", torch.float32) for name, t in init_state.items()}

    def fresh(indices: list[int]) -> StackedFit:
        if init_state is not None:
            states = [start] * len(indices)
        else:
            states = [stacked.init_state(config, stacked.slice_seed(
                seed, str(batch.case_ids[i]), int(batch.slice_indices[i]))) for i in indices]
        return StackedFit.from_states(states, device)
    return fresh
