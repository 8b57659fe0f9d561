"""deepG / deepSVG on single slices: a fresh network per slice, many slices fitted at once.

For each slice a U-Net f_theta maps the cropped image to K logits per pixel and is fitted
to that slice alone by minimising

    deepG:    NLL   = gmm_nll(softmax(f_theta(x)))
    deepSVG:  NLL_V = svgmm_nll(log_softmax(f_theta(x)))
    (+ lam * ||mu - mu_data||^2 when lam > 0)

with AdamW, the gradient norm clipped per slice, until |NLL_t - NLL_{t-1}| < tol after
``min_iter`` iterations or ``max_iter`` iterations (the published single-image recipe).

Many slices run simultaneously (see :mod:`deepgmm.fit.stacked`): every slice has its own
network, optimiser state, clipping and stopping rule. A slice that stops leaves the running
batch at once and a waiting slice takes its place, so a whole data set is one call and at
most ``concurrent`` networks are in memory. A slice's network is initialised from
``(seed, case id, slice index)``, so its result does not depend on which other slices
shared its batch.

The reported NLL, responsibilities and means of a slice all come from the last network
evaluated (the one whose NLL met the stopping rule).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from deepgmm.allocator import tune_cpu_allocator
from deepgmm.device import resolve_device
from deepgmm.errors import InputError
from deepgmm.fit import stacked
from deepgmm.fit.adamw import adamw_step_, clip_per_slice_
from deepgmm.fit.precision import network_autocast
from deepgmm.fit.stacked import StackedFit
from deepgmm.fit.threaded import SliceWorkers
from deepgmm.mixture.likelihood import gmm_nll_packed, mu_penalty, pack_image, svgmm_nll_packed
from deepgmm.options import FitOptions
from deepgmm.types import SegmentationResult, SliceBatch

__all__ = ["DEFAULT_CONCURRENT", "MODELS", "fit_slices"]

log = logging.getLogger(__name__)

Model = Literal["deepg", "deepsvg"]
MODELS: tuple[str, ...] = ("deepg", "deepsvg")

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


def _mu_data(mu_data: Any, lam: float, b: int, k: int, m: int,
             device: torch.device) -> torch.Tensor | None:
    """``(B, K, M)`` reference means on ``device``, or None when not used."""
    if lam == 0.0:
        return None
    if mu_data is None:
        raise InputError("lam > 0 needs mu_data (the (K, M) class means to pull towards)")
    mu = torch.as_tensor(np.asarray(mu_data.detach().cpu() if isinstance(mu_data, torch.Tensor)
                                    else mu_data, dtype=np.float32))
    if tuple(mu.shape) == (k, m):
        mu = mu.expand(b, k, m)
    if tuple(mu.shape) != (b, k, m):
        raise InputError(f"mu_data must be (K, M) = {(k, m)} or (B, K, M) = {(b, k, m)}, "
                         f"got {tuple(mu.shape)}")
    if not torch.isfinite(mu).all():
        raise InputError("mu_data holds NaN or infinite values")
    return mu.to(device)


def _loss(logits: torch.Tensor, model: str, packed: Any, lam: float,
          mu_active: torch.Tensor | None) -> tuple[torch.Tensor, Any, torch.Tensor]:
    """``(nll (N,), mixture parameters, loss (N,))`` of N slices' float32 logits."""
    if model == "deepg":
        nll, mix = gmm_nll_packed(logits.softmax(dim=1), packed)
    else:
        nll, mix = svgmm_nll_packed(logits.log_softmax(dim=1), packed)
    loss = nll if mu_active is None else nll + lam * mu_penalty(mix.means, mu_active)
    return nll, mix, loss


def fit_slices(batch: SliceBatch, *, model: Model = "deepg", lam: float = 0.0,
               mu_data: torch.Tensor | np.ndarray | None = None, tol: float = 1e-3,
               min_iter: int = 10, max_iter: int = 200, lr: float = 1e-4,
               weight_decay: float = 1e-3, clip_norm: float | None = 12.0, seed: int = 0,
               device: str | torch.device = "auto", concurrent: int | None = None,
               net_config: Mapping[str, Any] | None = None,
               init_state: Mapping[str, torch.Tensor] | None = None,
               progress: bool = True, mechanism: str = "auto",
               precision: str = "fp32") -> SegmentationResult:
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

    Returns:
        :class:`SegmentationResult` (on CPU) with ``responsibilities (B, K, H, W)``
        (softmax of the final logits), ``nll (B,)`` final NLL (NLL_V for deepSVG) without
        the penalty, ``n_iter (B,)``, ``seconds (B,)`` (each iteration's time shared among
        the slices it ran), ``means (B, K, M)`` from the final M-step.

    Raises:
        InputError: bad options, a bad batch, a slice whose ROI has fewer than K pixels, or
            a fit that diverged (non-finite NLL).
    """
    FitOptions.check({"model": model, "lam": lam, "tol": tol, "min_iter": min_iter,
                      "max_iter": max_iter, "lr": lr, "weight_decay": weight_decay,
                      "clip_norm": clip_norm, "seed": seed, "device": device,
                      "concurrent": concurrent, "mechanism": mechanism,
                      "precision": precision}, caller="fit_slices")
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
    image_all, roi_all = _check_values(batch, k)
    b, _, h, w = image_all.shape
    net = stacked.template(config)
    net.check_input(image_all[:1].to("meta"))
    if init_state is not None:
        stacked.check_state(init_state, config)
        start = {name: t.detach().to("cpu", torch.float32) for name, t in init_state.items()}
    mu_ref = _mu_data(mu_data, lam, b, k, m, dev)
    limit = concurrent if concurrent is not None else DEFAULT_CONCURRENT.get(dev.type, 8)

    def fresh(indices: list[int]) -> StackedFit:
        if init_state is not None:
            states = [start] * len(indices)
        else:
            states = [stacked.init_state(config, stacked.slice_seed(
                seed, str(batch.case_ids[i]), int(batch.slice_indices[i]))) for i in indices]
        return StackedFit.from_states(states, dev)

    image_dev = image_all.to(dev)
    roi_dev = roi_all.to(dev)
    resp_out = torch.zeros(b, k, h, w, dtype=torch.float32)
    nll_out = torch.zeros(b, dtype=torch.float64)
    means_out = torch.zeros(b, k, m, dtype=torch.float32)
    n_iter = torch.zeros(b, dtype=torch.int64)
    seconds = torch.zeros(b, dtype=torch.float64)
    prev_nll = torch.full((b,), float("inf"), dtype=torch.float64)

    pending: deque[int] = deque(range(b))
    parked: list[tuple[list[int], StackedFit]] = []  # moved aside after a CUDA OOM
    active: list[int] = []
    state: StackedFit | None = None
    # the running slices' images, packed ROI pixels and reference means, and whose they are
    image = packed = mu_active = packed_for = None
    graphs = grad_logits = grads = None  # this iteration's graphs (threads) or gradients
    bar = tqdm(total=b, disable=not progress, desc=f"{model} fit", unit="slice")
    workers = SliceWorkers(torch.get_num_threads()) if how == "threads" else None
    try:
        while pending or parked or active:
            t0 = time.perf_counter()
            # fill free places: slices moved aside first, then new ones
            joins: list[StackedFit] = [] if state is None else [state]
            while len(active) < limit and parked:
                ids, part = parked.pop()
                room = limit - len(active)
                if len(ids) > room:  # take what fits, leave the rest parked
                    rest = torch.arange(room, len(ids), device=dev)
                    parked.append((ids[room:], part.select(rest)))
                    ids, part = ids[:room], part.select(torch.arange(room, device=dev))
                active += ids
                joins.append(part)
            free = limit - len(active)
            if free > 0 and pending:
                new = [pending.popleft() for _ in range(min(free, len(pending)))]
                active += new
                joins.append(fresh(new))
            if len(joins) > 1 or state is None:
                state = StackedFit.cat(joins)

            if packed_for != active:  # gather and pack once per set of running slices
                index = torch.tensor(active, dtype=torch.int64, device=dev)
                image = image_dev.index_select(0, index)
                packed = pack_image(image, roi_dev.index_select(0, index), n_components=k)
                mu_active = None if mu_ref is None else mu_ref.index_select(0, index)
                packed_for = list(active)
            names = list(state.params)
            leaves = [] if workers is not None else [  # the workers make their own
                state.params[n].requires_grad_(True) for n in names]

            try:
                if workers is not None:  # forward, loss, backward in three steps
                    graphs = workers.forward(net, state.params, image, autocast)
                    logits = torch.cat([g.logits.detach() for g in graphs]).float()
                    nll, mix, loss = _loss(logits.requires_grad_(True), model, packed, lam,
                                           mu_active)
                    (grad_logits,) = torch.autograd.grad(loss.sum(), [logits])
                else:
                    with autocast():
                        logits = stacked.forward_stacked(net, state.params, image, how)
                    logits = logits.float()
                    nll, mix, loss = _loss(logits, model, packed, lam, mu_active)
                    grads = dict(zip(names, torch.autograd.grad(loss.sum(), leaves),
                                     strict=True))
            except torch.cuda.OutOfMemoryError as err:
                if len(active) == 1:
                    raise InputError(f"one slice of {h} x {w} pixels does not fit in the memory "
                                     f"of {dev}; use device='cpu' or a smaller net_config"
                                     ) from err
                del err
                half = len(active) // 2
                keep = torch.arange(half, device=dev)
                away = torch.arange(half, len(active), device=dev)
                parked.append((active[half:], state.select(away)))
                state, active, limit = state.select(keep), active[:half], half
                if dev.type == "cuda":
                    torch.cuda.empty_cache()
                log.warning("out of memory on %s: fitting %d slices at once instead", dev, half)
                continue
            for leaf in leaves:
                leaf.requires_grad_(False)

            nll_now = nll.detach().to("cpu", torch.float64)
            if not torch.isfinite(nll_now).all():
                i = active[int((~torch.isfinite(nll_now)).nonzero()[0, 0])]
                raise InputError(f"case {batch.case_ids[i]} slice {batch.slice_indices[i]}: "
                                 f"the NLL became non-finite at iteration {int(n_iter[i]) + 1} "
                                 f"(lr {lr}); try a lower lr or clip_norm")
            ids = torch.tensor(active, dtype=torch.int64)
            n_iter[ids] += 1
            change = (nll_now - prev_nll[ids]).abs()
            prev_nll[ids] = nll_now
            done = ((n_iter[ids] > min_iter) & (change < tol)) | (n_iter[ids] >= max_iter)
            if done.any():
                d = done.nonzero()[:, 0]
                d_dev = d.to(dev)
                resp_out[ids[d]] = logits.detach().index_select(0, d_dev).softmax(dim=1).cpu()
                nll_out[ids[d]] = nll_now[d]
                means_out[ids[d]] = mix.means.detach().index_select(0, d_dev).float().cpu()
            go_on = (~done).nonzero()[:, 0]
            if len(go_on) and workers is not None:  # backward and step of the slices going on
                workers.backward_step(graphs, grad_logits, go_on.tolist(), state,
                                      clip_norm=clip_norm, lr=lr, weight_decay=weight_decay)
                if len(go_on) < len(active):
                    state = state.select(go_on)
            elif len(go_on):
                if len(d_keep := go_on.to(dev)) < len(active):
                    state = state.select(d_keep)
                    grads = {n: g.index_select(0, d_keep) for n, g in grads.items()}
                clip_per_slice_(grads, clip_norm)
                adamw_step_(state, grads, lr=lr, weight_decay=weight_decay)
            else:
                state = None
            del logits, nll, mix, loss
            graphs = grad_logits = grads = None
            dt = time.perf_counter() - t0
            seconds[ids] += dt / len(active)
            n_done = int(done.sum())
            active = [a for a, stop in zip(active, done.tolist(), strict=True) if not stop]
            if n_done:
                bar.update(n_done)
    finally:
        bar.close()
        if workers is not None:
            workers.close()
    log.info("%s: %d slices, mean %.1f iterations, %.2f s per slice", model, b,
             float(n_iter.double().mean()), float(seconds.mean()))
    return SegmentationResult(responsibilities=resp_out, nll=nll_out.float(), n_iter=n_iter,
                              seconds=seconds, means=means_out, method=model)
