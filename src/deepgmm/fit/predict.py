"""Segment slices with a trained network: one forward pass per slice, optionally refined.

``predict(run_dir, batch)`` loads the checkpoint of a ``train`` run, checks that the data
have the sequences (names and order) it was trained on, and runs the network over the
slices in chunks without gradients. The responsibilities are the network's softmax; the
NLL and means per slice come from the closed-form M-step on them, as in training. A network
trained with ``context`` channels (:mod:`deepgmm.nets.context`) gets them computed from the
slices' ROI, as in training.

``tta=True`` averages the network's class probabilities over the symmetries of the crop
(quarter turns and mirrors, :mod:`deepgmm.nets.tta`): 8 forward passes per slice instead of
one.

``fusion="labelled"`` multiplies the network's class probabilities by the class Gaussians
of the slices whose labels gave the run its μ_data (stored by ``train`` in the run's
``config.json``; :mod:`deepgmm.mixture.fusion`) and renormalises; ``"none"`` (the default
here, and the published method) returns the network's probabilities. The ``deepgmm`` recipe
of the command line fuses.

``refine=N`` continues per-slice fitting from the trained weights for N iterations
(:func:`deepgmm.fit.single.fit_slices` with ``init_state``): every slice gets its own copy
of the trained network, fine-tuned on that slice alone.

The loss is :mod:`deepgmm.fit.loss`'s. Slices normalised otherwise than the training slices
(``SliceBatch.normalisation`` against the checkpoint's) are refused; so are slices of
another crop size when the refinement pulls towards the checkpoint's μ_data. Another crop
size alone only warns: the network is fully convolutional.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from deepgmm.allocator import tune_cpu_allocator
from deepgmm.data.mu_data import check_prepared_like
from deepgmm.errors import InputError
from deepgmm.fit.checkpoint import build_network, load_checkpoint
from deepgmm.fit.loss import nll_of_log_resp, pack_slices
from deepgmm.fit.precision import network_autocast
from deepgmm.mixture.subclasses import class_params, class_probabilities
from deepgmm.nets.context import network_input
from deepgmm.nets.tta import PLAIN, averaged_log_softmax
from deepgmm.options import PredictOptions
from deepgmm.types import SegmentationResult, SliceBatch

logger = logging.getLogger(__name__)

DEFAULT_REFINE_LR = 1e-4
"""Learning rate of the per-slice refinement (the published single-image setting)."""


def predict(run_dir: str | os.PathLike[str], batch: SliceBatch, *, refine: int = 0,
            device: str | torch.device = "auto", chunk_size: int = 16,
            refine_lr: float = DEFAULT_REFINE_LR, refine_lam: float | None = None,
            tta: bool = False, progress: bool = False,
            precision: str | None = None, fusion: str = "none") -> SegmentationResult:
    """Apply a trained deepG / deepSVG network to a batch of slices.

    Args:
        run_dir: folder written by :func:`deepgmm.fit.train.train_network` (``deepgmm
            train --out``).
        batch: slices to segment: image ``(B, M, H, W)`` normalised as in training, roi
            ``(B, H, W)``; the sequences must match the checkpoint's, in order.
        refine: per-slice fitting iterations started from the trained weights (0: none;
            not for a network trained with context channels).
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or a :class:`torch.device`.
        chunk_size: slices per forward pass.
        refine_lr: AdamW learning rate of the refinement.
        refine_lam: weight of the mu_data penalty during refinement; ``None`` keeps the
            training lambda. With 0 the refinement minimises the NLL alone (the class order
            still comes from the trained network it starts from).
        tta: average the class probabilities over the crop's symmetries (test-time
            augmentation; not with ``refine``).
        progress: show a progress bar during refinement.
        precision: ``"fp32"`` or ``"bf16"`` for the network's convolutions (see
            :mod:`deepgmm.fit.precision`); ``None``: the precision it was trained in.
        fusion: ``"labelled"``: fuse the probabilities with the run's labelled class
            Gaussians (a warning and no fusion for a run trained without ground truth);
            ``"none"``: the network's probabilities.

    Returns:
        :class:`~deepgmm.types.SegmentationResult` with responsibilities ``(B, K, H, W)``,
        NLL ``(B,)`` (NLL_V for deepSVG), means ``(B, K, M)``, iterations ``(B,)`` (0
        without refinement) and seconds ``(B,)``; ``method`` is the trained model's name.

    Raises:
        CheckpointError: a missing, corrupt or incompatible checkpoint (other sequences).
        InputError: bad ``refine`` or ``chunk_size``; ``tta`` with ``refine``; ``refine``
            for a network trained with context channels; H and W not
            multiples of ``2 ** depth``; slices prepared otherwise than the training slices
            (see the module docstring).
    """
    from deepgmm.device import resolve_device

    PredictOptions.check({"refine": refine, "refine_lr": refine_lr, "refine_lam": refine_lam,
                          "tta": tta, "chunk_size": chunk_size, "device": device,
                          "precision": precision, "fusion": fusion}, caller="predict")
    dev = resolve_device(device)
    if dev.type == "cpu":
        tune_cpu_allocator()
    ckpt = load_checkpoint(run_dir, sequences=batch.sequences, device="cpu")
    config = ckpt.config
    if precision is None:
        precision = str(config.get("precision", "fp32"))
    autocast = network_autocast(precision, dev)
    crop = [int(batch.image.shape[2]), int(batch.image.shape[3])]
    if crop != list(config["crop_size"]):
        logger.warning("slices are %d x %d, the network was trained on %d x %d crops",
                       *crop, *config["crop_size"])
    source = f"checkpoint {str(run_dir)!r}"
    check_prepared_like(None, config["normalisation"], batch, f"{source} was trained on")
    context = str(config.get("context", "none"))
    if refine > 0 and context != "none":
        raise InputError(f"refine fits per-slice networks on the image alone; the network of "
                         f"{str(run_dir)!r} was trained with context {context!r} channels",
                         params=("refine",))
    per_class = int(config.get("components_per_class", 1))
    if refine > 0 and per_class > 1:
        raise InputError(f"refine fits one Gaussian per class; the network of "
                         f"{str(run_dir)!r} has {per_class} components per class",
                         params=("refine",))
    if refine > 0:
        refined = _refine(ckpt.config, ckpt.model_state, batch, refine=refine, device=dev,
                          lr=refine_lr, lam=refine_lam, progress=progress,
                          precision=precision, source=source)
        return fuse_result(refined, batch, [config], [run_dir], fusion)

    network = build_network(ckpt, device=dev).eval()
    network.check_input(network_input(batch.image[:1], batch.roi[:1], context))

    def logits_of(image: torch.Tensor) -> torch.Tensor:
        with autocast():
            logits = network(image)
        return logits.float()
    model = str(config["model"])
    t0 = time.perf_counter()
    resp_parts, nll_parts, mean_parts = [], [], []
    with torch.inference_mode():
        for start in range(0, len(batch), chunk_size):
            img = batch.image[start:start + chunk_size].to(dev, dtype=torch.float32)
            roi = batch.roi[start:start + chunk_size].to(dev, dtype=torch.bool)
            # Context channels are a function of the ROI that commutes with the symmetries
            # of test-time augmentation, so they are transformed with the image.
            log_resp = averaged_log_softmax(logits_of, network_input(img, roi, context),
                                            None if tta else PLAIN)
            packed = pack_slices(img, roi, int(log_resp.shape[1]))
            nll, mixture = nll_of_log_resp(log_resp, packed, model)
            # a class's probability: the sum of its components' (deepgmm.mixture.subclasses)
            resp_parts.append(class_probabilities(log_resp.exp(), per_class).cpu())
            nll_parts.append(nll.cpu())
            mean_parts.append(class_params(mixture, per_class).means.cpu())
    seconds = time.perf_counter() - t0
    n = len(batch)
    result = SegmentationResult(
        responsibilities=torch.cat(resp_parts), nll=torch.cat(nll_parts),
        n_iter=torch.zeros(n, dtype=torch.int64),
        seconds=torch.full((n,), seconds / n, dtype=torch.float64),
        means=torch.cat(mean_parts), method=model)
    return fuse_result(result, batch, [config], [run_dir], fusion)


def fusion_applies(configs: Sequence[Mapping[str, Any]]) -> bool:
    """Whether the runs of ``configs`` can be fused: each stores class Gaussians and has
    its class order fixed by μ_data (``lam > 0``); otherwise channel k need not be class k."""
    return all(c.get("class_gaussians") and c.get("mu_data") is not None
               and float(c.get("lam", 0.0)) > 0 for c in configs)


def fuse_result(result: SegmentationResult, batch: SliceBatch,
                configs: Sequence[Mapping[str, Any]], runs: Sequence[Any],
                fusion: str) -> SegmentationResult:
    """``result`` with its responsibilities fused with the class Gaussians of ``configs``'
    runs (:func:`deepgmm.mixture.fusion.fuse_probabilities`; several runs: their
    log-likelihoods averaged) when ``fusion == "labelled"``; as it is for ``"none"``, and
    with a warning when a run has no class Gaussians (trained without ground truth). NLL
    and means stay those of the network's mixture."""
    from dataclasses import replace

    from deepgmm.mixture.fusion import FUSIONS, ClassGaussians, fuse_probabilities

    if fusion not in FUSIONS:
        raise InputError(f"fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}",
                         params=("fusion",))
    if fusion == "none":
        return result
    missing = [str(r) for r, c in zip(runs, configs, strict=True)
               if not c.get("class_gaussians")]
    if missing:
        warnings.warn(f"run {missing[0]!r} stores no class Gaussians of labelled slices "
                      "(trained without ground truth, or before they were stored): its "
                      "probabilities are not fused", stacklevel=3)
        return result
    if not fusion_applies(configs):
        warnings.warn("a run was trained without μ_data (lam 0), so its channels are "
                      "clusters in no fixed order: its probabilities are not fused",
                      stacklevel=3)
        return result
    k, m = int(result.responsibilities.shape[1]), len(batch.sequences)
    models = [ClassGaussians.from_dict(c["class_gaussians"], k, m) for c in configs]
    fused = fuse_probabilities(result.responsibilities, batch.image, batch.roi, models)
    return replace(result, responsibilities=fused)


def _refine(config: dict[str, Any], state: dict[str, torch.Tensor], batch: SliceBatch, *,
            refine: int, device: torch.device, lr: float, lam: float | None,
            progress: bool, precision: str, source: str) -> SegmentationResult:
    """Exactly ``refine`` per-slice iterations from the trained weights (``min_iter`` =
    ``max_iter``, so the stopping tolerance never ends a slice earlier). The μ_data
    penalty needs slices prepared as the training slices (crop size and normalisation)."""
    from deepgmm.fit.single import fit_slices

    mu = config["mu_data"]
    lam = float(config["lam"] if lam is None else lam) if mu is not None else 0.0
    if lam > 0:
        check_prepared_like(config["crop_size"], config["normalisation"], batch,
                            f"μ_data of {source} was computed from")
    return fit_slices(batch, model=config["model"], lam=lam,
                      mu_data=None if mu is None else torch.tensor(mu, dtype=torch.float32),
                      tol=1e-3, min_iter=refine, max_iter=refine, lr=lr,
                      seed=int(config["seed"]), device=device, init_state=state,
                      net_config=config["network"], progress=progress, precision=precision)
