"""One network trained on many slices: the "trained on many images" deepG / deepSVG.

A single U-Net is trained on every training slice with mini-batches, AdamW and the
polynomial learning-rate decay of the published code, ``lr * (1 - epoch / epochs) ** 0.9``.
The loss of a mini-batch is the mean over its slices of the per-slice NLL (deepG: GMM NLL,
deepSVG: spatially variant NLL, each with its closed-form M-step inside the loss) plus the
μ_data penalty. As in the published code the penalty is ``lam * ||mean_b mu_b - mu_data||^2``
(``penalty="batch"``): the mini-batch's mean class means are pulled towards μ_data, so each
slice keeps its own class means; ``penalty="slice"`` pulls every slice's means instead,
``lam * mean_b ||mu_b - mu_data||^2``, which adds the spread of the class means between the
slices to the penalty. The gradient norm is clipped (12, as published). With
``label_weight > 0`` the slices whose ground truth defines μ_data also add a cross-entropy
term (:mod:`deepgmm.fit.labelled`). Training stops when
the epoch-mean NLL changes by less than ``tol`` once ``min_epochs`` epochs are done, or after
``epochs``.

All slices stay on the device; a mini-batch is an index into them, augmented on the device
(:mod:`deepgmm.data.augment`). Randomness is drawn from one generator per epoch seeded from
``(seed, epoch)``, so a run resumed from a checkpoint continues exactly as the run that was
interrupted would have.

With a ``run_dir``, a checkpoint (:mod:`deepgmm.fit.checkpoint`) and a training-curve PNG
are written after every epoch.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from deepgmm.allocator import tune_cpu_allocator
from deepgmm.data.augment import AugmentConfig, augment_batch
from deepgmm.errors import CheckpointError, InputError
from deepgmm.fit.checkpoint import (
    build_network,
    has_checkpoint,
    load_checkpoint,
    recover_checkpoint,
    save_checkpoint,
)
from deepgmm.fit.labelled import labelled_cross_entropy, labelled_targets
from deepgmm.mixture.likelihood import (
    MixtureParams,
    check_inputs,
    gmm_nll,
    mu_penalty,
    svgmm_nll,
)
from deepgmm.mixture.prior import PRIORS, ParameterPrior
from deepgmm.mixture.subclasses import class_params
from deepgmm.types import CLASS_NAMES, SliceBatch

logger = logging.getLogger(__name__)

ModelName = Literal["deepg", "deepsvg"]
MODELS: tuple[str, ...] = ("deepg", "deepsvg")
CURVE_FILE = "training_curve.png"

# Settings that must be equal for a run to be resumed.
_RESUME_KEYS: tuple[str, ...] = (
    "model", "lam", "epochs", "min_epochs", "batch_size", "lr", "weight_decay", "tol", "seed",
    "augment", "network", "train_patients", "n_slices", "crop_size", "sequences", "mu_data",
    "penalty", "clip_norm", "label_weight", "labelled_slices", "precision",
    "prior", "lam_var", "lam_weights", "class_prior", "components_per_class",
)
PENALTIES: tuple[str, ...] = ("batch", "slice")
# What a checkpoint written before a setting existed used, for comparing on resume.
_RESUME_DEFAULTS: dict[str, Any] = {"label_weight": 0.0, "labelled_slices": [],
                                    "precision": "fp32", "prior": "means", "lam_var": 0.0,
                                    "lam_weights": 0.0, "class_prior": None,
                                    "components_per_class": 1}


@dataclass
class TrainResult:
    """A trained network and how it got there.

    Attributes:
        network: the trained U-Net (on the training device, in eval mode).
        config: the run's configuration, as stored in ``config.json``.
        nll_history: epoch-mean NLL per epoch (training slices, augmented).
        loss_history: epoch-mean loss (NLL + lam * penalty) per epoch.
        n_epochs: epochs trained in total (across resumes).
        converged: whether the NLL change fell below ``tol`` before ``epochs``.
        seconds: training wall time in total (across resumes).
        mu_data: ``(K, M)`` class means used by the penalty, or ``None`` (lam = 0, no labels).
        run_dir: the run folder, or ``None``.
    """

    network: torch.nn.Module
    config: dict[str, Any]
    nll_history: list[float]
    loss_history: list[float]
    n_epochs: int
    converged: bool
    seconds: float
    mu_data: torch.Tensor | None
    run_dir: Path | None = None
    lr_history: list[float] = field(default_factory=list)


def batch_nll(network: torch.nn.Module, image: torch.Tensor, roi: torch.Tensor,
              model: str, *, validate: bool = True,
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward pass and per-slice NLL of deepG or deepSVG.

    Args:
        network: maps ``(B, M, H, W)`` to ``(B, K, H, W)`` logits.
        image: ``(B, M, H, W)``.
        roi: ``(B, H, W)`` bool.
        model: ``"deepg"`` (GMM NLL) or ``"deepsvg"`` (spatially variant NLL).
        validate: check the inputs (one host-device synchronisation); training checks the
            whole batch once instead.

    Returns:
        ``(nll (B,), responsibilities (B, K, H, W), means (B, K, M))``.
    """
    return nll_of_log_resp(torch.log_softmax(network(image), dim=1), image, roi, model,
                           validate=validate)


def nll_of_log_resp(log_resp: torch.Tensor, image: torch.Tensor, roi: torch.Tensor,
                    model: str, *, validate: bool = True,
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-slice NLL of deepG or deepSVG for given log-responsibilities.

    Args:
        log_resp: ``(B, K, H, W)`` log class probabilities (log-softmax of the logits).
        image, roi, model, validate: as for :func:`batch_nll`.

    Returns:
        ``(nll (B,), responsibilities (B, K, H, W), means (B, K, M))``.
    """
    nll, params = mixture_nll(log_resp, image, roi, model, validate=validate)
    return nll, log_resp.exp(), params.means


def mixture_nll(log_resp: torch.Tensor, image: torch.Tensor, roi: torch.Tensor,
                model: str, *, validate: bool = True) -> tuple[torch.Tensor, MixtureParams]:
    """Per-slice NLL of deepG or deepSVG and the M-step's parameters (all differentiable).

    Args:
        log_resp, image, roi, model, validate: as for :func:`nll_of_log_resp`.

    Returns:
        ``(nll (B,), params)`` with ``weights (B, K)``, ``means (B, K, M)``, diagonal
        ``covariances (B, K, M)``.
    """
    if model == "deepg":
        return gmm_nll(log_resp.exp(), image, roi, validate=validate)
    return svgmm_nll(log_resp, image, roi, validate=validate)


def default_config(**overrides: Any) -> dict[str, Any]:
    """The training settings of the published code (many images), updated by ``overrides``."""
    cfg: dict[str, Any] = {"model": "deepg", "lam": 1.0, "epochs": 100, "min_epochs": 10,
                           "batch_size": 4, "lr": 1e-3, "weight_decay": 1e-3, "tol": 5e-3}
    cfg.update(overrides)
    return cfg


def _epoch_seed(seed: int, epoch: int) -> int:
    return (int(seed) * 1_000_003 + int(epoch) * 7919 + 17) % (2**63 - 1)


def _as_mu(mu_data: Any, k: int, sequences: Sequence[str], dev: torch.device) -> torch.Tensor:
    """``(K, M)`` float32 tensor on ``dev`` from an array-like, checked."""
    try:
        mu = torch.as_tensor(np.asarray(mu_data, dtype=np.float32), device=dev)
    except (TypeError, ValueError) as err:
        raise InputError(f"mu_data must be a (K, M) array of numbers: {err}") from err
    if mu.shape != (k, len(sequences)):
        raise InputError(f"mu_data must have shape (K, M) = ({k}, {len(sequences)}) for the "
                         f"sequences {', '.join(sequences)}, got {tuple(mu.shape)}")
    if not bool(torch.isfinite(mu).all()):
        raise InputError("mu_data holds NaN or infinite values")
    return mu


def _plot_curve(path: Path, nll: list[float], loss: list[float], model: str) -> None:
    """Write the training curve (epoch NLL and loss) as a PNG, atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from deepgmm._atomic import atomic_path

    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
    epochs = np.arange(1, len(nll) + 1)
    ax.plot(epochs, nll, marker="o", ms=3, label="NLL" if model == "deepg" else "NLL_V")
    ax.plot(epochs, loss, marker=".", ms=3, ls="--", label="loss (NLL + λ·penalty)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("epoch mean")
    ax.set_title(f"{model} training")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)


def _check_settings(model: str, lam: float, epochs: int, min_epochs: int, batch_size: int,
                    lr: float, weight_decay: float, tol: float) -> None:
    if model not in MODELS:
        raise InputError(f"model must be one of {', '.join(MODELS)}, got {model!r}")
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{name} must be an integer >= 1, got {value!r}")
    if isinstance(min_epochs, bool) or not isinstance(min_epochs, int) or min_epochs < 1:
        raise InputError(f"min_epochs must be an integer >= 1, got {min_epochs!r}")
    if min_epochs > epochs:
        raise InputError(f"min_epochs ({min_epochs}) must not exceed epochs ({epochs})")
    for name, value, low in (("lam", lam, 0.0), ("weight_decay", weight_decay, 0.0),
                             ("tol", tol, 0.0)):
        if not math.isfinite(value) or value < low:
            raise InputError(f"{name} must be a finite number >= {low}, got {value!r}")
    if not math.isfinite(lr) or lr <= 0:
        raise InputError(f"lr must be a finite number > 0, got {lr!r}")


def train_network(batch: SliceBatch, *, model: ModelName = "deepg", lam: float = 1.0,
                  mu_data: Any = None, epochs: int = 100, min_epochs: int = 10,
                  batch_size: int = 4, lr: float = 1e-3, weight_decay: float = 1e-3,
                  tol: float = 5e-3, seed: int = 0, device: str | torch.device = "auto",
                  augment: bool | AugmentConfig = True,
                  run_dir: str | os.PathLike[str] | None = None, resume: bool = False,
                  progress: bool = True, depth: int = 4, base_filters: int = 32,
                  n_classes: int = len(CLASS_NAMES), normalisation: str = "crop",
                  penalty: Literal["batch", "slice"] = "batch",
                  clip_norm: float | None = 12.0, label_weight: float = 0.0,
                  labelled_slices: int = 10, precision: str = "fp32",
                  prior: Literal["means", "all"] = "means", lam_var: float = 1.0,
                  lam_weights: float = 1.0, class_prior: Any = None,
                  components_per_class: int = 1) -> TrainResult:
    """Train one U-Net on all slices of ``batch`` by minimising the deepG / deepSVG loss.

    Args:
        batch: training slices: image ``(B, M, H, W)``, roi ``(B, H, W)``; labels are used
            only to compute ``mu_data`` when it is not given and, with ``label_weight > 0``,
            for the cross-entropy of the labelled slices.
        model: ``"deepg"`` (GMM NLL) or ``"deepsvg"`` (spatially variant NLL).
        lam: weight of ``||mu - mu_data||^2``; with lam > 0 the class order follows mu_data.
        mu_data: ``(K, M)`` class means (array-like); when ``None`` they are computed from the
            training slices' ground truth (:func:`deepgmm.data.mu_data.compute_mu_data`).
        epochs: maximum number of epochs (also the horizon of the learning-rate decay).
        min_epochs: epochs before the stopping rule applies.
        batch_size: slices per optimiser step.
        lr: initial AdamW learning rate; epoch e uses ``lr * (1 - e / epochs) ** 0.9``.
        weight_decay: AdamW weight decay.
        tol: stop when the epoch-mean NLL changes by less than this.
        seed: seeds the network's initial weights, the slice order and the augmentation.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or a :class:`torch.device`.
        augment: ``True`` for the published augmentation, ``False`` for none, or an
            :class:`~deepgmm.data.augment.AugmentConfig`.
        run_dir: folder for the checkpoint and training curve (``None``: nothing written).
        resume: continue the checkpoint in ``run_dir`` (a run that finished is returned
            as is); without a checkpoint there, training starts afresh.
        progress: show a progress bar with the epoch NLL.
        depth: U-Net down-sampling steps (H and W must be multiples of ``2 ** depth``).
        base_filters: U-Net channels of the first level.
        n_classes: K.
        normalisation: how ``batch`` was normalised (recorded for prediction).
        penalty: ``"batch"`` (published): ``||mean_b mu_b - mu_data||^2`` over the mini-batch;
            ``"slice"``: ``mean_b ||mu_b - mu_data||^2``.
        clip_norm: gradient-norm clipping (``None``: off).
        label_weight: weight of the cross-entropy on the labelled slices (0: none, the
            published loss).
        labelled_slices: how many slices carry their labels when ``label_weight > 0``, drawn
            as μ_data's slices are (seed 42), so with the defaults they are the same slices.
        precision: ``"fp32"`` or ``"bf16"`` (the network's convolutions in bfloat16 under
            ``torch.autocast``; weights, optimiser and loss in float32; see
            :mod:`deepgmm.fit.precision`). Recorded in the checkpoint; prediction uses it
            unless told otherwise.
        prior: ``"means"`` (published): only the μ_data penalty; ``"all"``: also
            ``lam_var`` times the distance of the mini-batch's mean log variances and
            ``lam_weights`` times the KL divergence of its mean weights from the labelled
            slices' (:mod:`deepgmm.mixture.prior`), on the mini-batch as ``penalty`` says.
        lam_var: weight of the log-variance penalty (``prior="all"``).
        lam_weights: weight of the weight penalty (``prior="all"``).
        class_prior: a :class:`~deepgmm.data.class_prior.ClassPrior` (or its ``to_dict``
            form) for ``prior="all"``; when ``None`` it is computed from the training
            slices' ground truth with μ_data's draw (10 slices, seed 42). Stored in the
            run's ``config.json``.
        components_per_class: J Gaussian components per class (1: published): the network
            outputs ``n_classes * J`` channels, the mixture is fitted over all of them, and
            the penalties act on each class's component mixture
            (:mod:`deepgmm.mixture.subclasses`); prediction sums a class's components.

    Returns:
        A :class:`TrainResult`.

    Raises:
        InputError: bad settings, lam > 0 without mu_data or labels, a ``run_dir`` that
            already holds a checkpoint without ``resume``.
        CheckpointError: ``resume`` with a checkpoint made with other settings or data.
    """
    from deepgmm.device import resolve_device
    from deepgmm.fit.precision import network_autocast
    from deepgmm.nets.unet import UNet

    _check_settings(model, lam, epochs, min_epochs, batch_size, lr, weight_decay, tol)
    if penalty not in PENALTIES:
        raise InputError(f"penalty must be one of {', '.join(PENALTIES)}, got {penalty!r}")
    if clip_norm is not None and not (math.isfinite(clip_norm) and clip_norm > 0):
        raise InputError(f"clip_norm must be a finite number > 0 or None, got {clip_norm!r}")
    if not (math.isfinite(label_weight) and label_weight >= 0):
        raise InputError(f"label_weight must be a finite number >= 0, got {label_weight!r}")
    if prior not in PRIORS:
        raise InputError(f"prior must be one of {', '.join(PRIORS)}, got {prior!r}")
    for name, value in (("lam_var", lam_var), ("lam_weights", lam_weights)):
        if not (math.isfinite(value) and value >= 0):
            raise InputError(f"{name} must be a finite number >= 0, got {value!r}")
    if isinstance(components_per_class, bool) or not isinstance(components_per_class, int) \
            or components_per_class < 1:
        raise InputError(f"components_per_class must be an integer >= 1, got "
                         f"{components_per_class!r}")
    n_components = n_classes * components_per_class
    dev = resolve_device(device)
    autocast = network_autocast(precision, dev)
    if dev.type == "cpu":
        tune_cpu_allocator()
    run = Path(run_dir) if run_dir is not None else None
    if resume and run is None:
        raise InputError("resume needs a run folder (run_dir / --out)")
    if run is not None and run.exists() and not run.is_dir():
        raise InputError(f"run folder {str(run)!r} exists and is not a folder")
    if run is not None and not resume and has_checkpoint(run):
        raise InputError(f"{str(run)!r} already holds a checkpoint; pass --resume to continue "
                         "it, or choose another --out folder")
    n_slices = len(batch)
    if n_slices == 0:
        raise InputError("the training batch holds no slices")
    sequences = tuple(batch.sequences)
    h, w = int(batch.image.shape[2]), int(batch.image.shape[3])
    aug_cfg = (AugmentConfig() if augment is True else augment) if augment else None

    ckpt = None
    if resume and run is not None and has_checkpoint(run):
        recover_checkpoint(run)
        ckpt = load_checkpoint(run, sequences=sequences, n_classes=n_classes,
                               with_optimizer=True, device="cpu")

    if mu_data is None and ckpt is not None:
        mu_data = ckpt.config["mu_data"]
    if mu_data is None and batch.labels is not None:
        from deepgmm.data.mu_data import compute_mu_data

        mu_data = compute_mu_data(batch)
    if mu_data is None and lam > 0:
        raise InputError("lam > 0 needs class means: give mu_data (--mu-data) or training "
                         "data with ground truth")
    mu = None if mu_data is None else _as_mu(mu_data, n_classes, sequences, dev)
    class_stats = _class_prior(prior, class_prior, ckpt, batch, n_classes, len(sequences))
    param_prior = None if class_stats is None else ParameterPrior(
        log_variances=torch.as_tensor(class_stats.log_variances, dtype=torch.float32,
                                      device=dev),
        weights=torch.as_tensor(class_stats.weights, dtype=torch.float32, device=dev),
        lam_var=float(lam_var), lam_weights=float(lam_weights))
    target, labelled = None, np.zeros(0, dtype=np.int64)
    if label_weight > 0:
        target, labelled = labelled_targets(batch, labelled_slices)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        network = UNet(len(sequences), n_classes=n_components, depth=depth,
                       base_filters=base_filters)
    network.check_input(batch.image[:1])

    from deepgmm import __version__

    train_patients = sorted(set(batch.case_ids),
                            key=lambda c: (int(c), c) if c.isdigit() else (1 << 62, c))
    config: dict[str, Any] = {
        "model": model, "lam": float(lam), "epochs": int(epochs),
        "min_epochs": int(min_epochs), "batch_size": int(batch_size), "lr": float(lr),
        "weight_decay": float(weight_decay), "tol": float(tol), "seed": int(seed),
        "penalty": penalty, "clip_norm": None if clip_norm is None else float(clip_norm),
        "label_weight": float(label_weight), "precision": precision,
        "components_per_class": int(components_per_class),
        "prior": prior, "lam_var": float(lam_var) if class_stats is not None else 0.0,
        "lam_weights": float(lam_weights) if class_stats is not None else 0.0,
        "class_prior": None if class_stats is None else class_stats.to_dict(),
        "labelled_slices": [[batch.case_ids[i], int(batch.slice_indices[i])]
                            for i in labelled],
        "augment": None if aug_cfg is None else dataclasses.asdict(aug_cfg),
        "network": network.config,
        "n_classes": int(n_classes), "class_names": list(CLASS_NAMES[:n_classes])
        if n_classes == len(CLASS_NAMES) else [f"class{k + 1}" for k in range(n_classes)],
        "sequences": list(sequences), "normalisation": normalisation,
        "crop_size": [h, w],
        "mu_data": None if mu is None else mu.cpu().tolist(),
        "train_patients": train_patients, "n_slices": n_slices,
        "train_slices": [[c, int(z)] for c, z in zip(batch.case_ids, batch.slice_indices,
                                                       strict=True)],
        "package_version": __version__, "torch_version": torch.__version__,
        "device": str(dev),
    }

    optimizer = torch.optim.AdamW(network.parameters(), lr=lr, weight_decay=weight_decay)
    history: dict[str, list[float]] = {"nll": [], "loss": [], "lr": [], "seconds": []}
    start_epoch, converged, finished = 0, False, False
    if ckpt is not None:
        _check_resume(ckpt.config, config, run)
        net_loaded = build_network(ckpt, device="cpu")
        network.load_state_dict(net_loaded.state_dict())
        try:
            optimizer.load_state_dict(ckpt.optimizer_state)  # type: ignore[arg-type]
        except (ValueError, KeyError, RuntimeError) as err:
            raise CheckpointError(f"optimiser state in {str(run)!r} does not fit the "
                                  f"network: {err}") from err
        history = {k: [float(v) for v in ckpt.config.get("history", {}).get(k, [])]
                   for k in history}
        start_epoch = int(ckpt.config["epoch"])
        converged = bool(ckpt.config.get("converged", False))
        finished = bool(ckpt.config.get("finished", False))
        logger.info("resuming %s at epoch %d", run, start_epoch)
    network.to(dev)
    _optimizer_to(optimizer, dev)

    image = batch.image.to(dev, dtype=torch.float32)
    roi = batch.roi.to(dev, dtype=torch.bool)
    check_inputs(image, roi, n_components=n_components)
    target_dev = None if target is None else target.to(dev)

    from tqdm.auto import tqdm

    bar = tqdm(total=epochs, initial=start_epoch, desc=f"train {model}", unit="epoch",
               disable=not progress, leave=False)
    epoch = start_epoch
    try:
        while not finished and epoch < epochs:
            t0 = time.perf_counter()
            lr_e = lr * (1.0 - epoch / epochs) ** 0.9
            for group in optimizer.param_groups:
                group["lr"] = lr_e
            nll_sum, loss_sum = _run_epoch(network, optimizer, image, roi, model=model,
                                           lam=lam, mu=mu, batch_size=batch_size,
                                           penalty=penalty, clip_norm=clip_norm,
                                           generator_seed=_epoch_seed(seed, epoch),
                                           aug_cfg=aug_cfg, dev=dev, target=target_dev,
                                           label_weight=label_weight, autocast=autocast,
                                           param_prior=param_prior,
                                           per_class=components_per_class)
            epoch += 1
            history["nll"].append(nll_sum / n_slices)
            history["loss"].append(loss_sum / n_slices)
            history["lr"].append(lr_e)
            history["seconds"].append(time.perf_counter() - t0)
            if not math.isfinite(history["nll"][-1]):
                raise InputError(f"training diverged at epoch {epoch} (NLL is not finite); "
                                 "lower --lr or check the images")
            if epoch >= min_epochs and len(history["nll"]) >= 2:
                converged = abs(history["nll"][-1] - history["nll"][-2]) < tol
            finished = converged or epoch >= epochs
            bar.update(1)
            bar.set_postfix(nll=f"{history['nll'][-1]:.4f}", lr=f"{lr_e:.2e}")
            if run is not None:
                _save(run, network, optimizer, config, history, epoch, converged, finished)
    finally:
        bar.close()
    network.eval()
    config.update({"epoch": epoch, "converged": converged, "finished": finished,
                   "history": history})
    return TrainResult(network=network, config=config, nll_history=history["nll"],
                       loss_history=history["loss"], n_epochs=epoch, converged=converged,
                       seconds=float(sum(history["seconds"])), mu_data=mu, run_dir=run,
                       lr_history=history["lr"])


def _run_epoch(network: torch.nn.Module, optimizer: torch.optim.Optimizer,
               image: torch.Tensor, roi: torch.Tensor, *, model: str, lam: float,
               mu: torch.Tensor | None, batch_size: int, penalty: str,
               clip_norm: float | None, generator_seed: int,
               aug_cfg: AugmentConfig | None, dev: torch.device,
               target: torch.Tensor | None = None, label_weight: float = 0.0,
               autocast: Callable[[], AbstractContextManager] = nullcontext,
               param_prior: ParameterPrior | None = None, per_class: int = 1,
               ) -> tuple[float, float]:
    """One pass over all slices in a seeded random order; returns summed (NLL, loss).

    ``target`` ``(B, H, W)`` holds the labelled slices' classes (0: no label); it is
    augmented with the image and adds ``label_weight`` times their cross-entropy. The
    network runs inside ``autocast()`` (:func:`deepgmm.fit.precision.network_autocast`); its
    logits are cast to float32 before the loss. ``param_prior`` adds the variance and
    weight penalties of ``prior="all"``; with ``per_class`` components per class the
    penalties act on the classes' component mixtures."""
    network.train()
    gen = torch.Generator(device=dev)
    gen.manual_seed(generator_seed)
    n = image.shape[0]
    order = torch.randperm(n, generator=gen, device=dev)
    nll_total = torch.zeros((), device=dev)
    loss_total = torch.zeros((), device=dev)
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        img, msk = image[idx], roi[idx]
        lab = None if target is None else target[idx]
        if aug_cfg is not None:
            img, msk, lab = augment_batch(img, msk, lab, generator=gen, config=aug_cfg)
        with autocast():
            logits = network(img)
        log_resp = torch.log_softmax(logits.float(), dim=1)
        nll, params = mixture_nll(log_resp, img, msk, model, validate=False)
        params = class_params(params, per_class)
        means = params.means
        loss = nll.mean()
        if lab is not None and label_weight > 0:
            loss = loss + label_weight * labelled_cross_entropy(log_resp, lab, msk).mean()
        if mu is not None and lam != 0:
            if penalty == "batch":
                loss = loss + lam * mu_penalty(means.mean(dim=0), mu)
            else:
                loss = loss + lam * mu_penalty(means, mu).mean()
        if param_prior is not None:
            loss = loss + param_prior.penalty(params.weights, params.covariances,
                                              per_slice=penalty == "slice")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(network.parameters(), clip_norm)
        optimizer.step()
        nll_total += nll.detach().sum()
        loss_total += loss.detach() * idx.numel()
    return float(nll_total), float(loss_total)


def _class_prior(prior: str, given: Any, ckpt: Any, batch: SliceBatch, n_classes: int,
                 n_sequences: int) -> Any:
    """The :class:`~deepgmm.data.class_prior.ClassPrior` of ``prior="all"`` (``None`` for
    ``"means"``): as given, else the checkpoint's, else from the batch's ground truth."""
    from deepgmm.data.class_prior import ClassPrior, compute_class_prior

    if prior == "means":
        return None
    if isinstance(given, ClassPrior):
        given = given.to_dict()
    if given is None and ckpt is not None:
        given = ckpt.config.get("class_prior")
    if given is not None:
        return ClassPrior.from_dict(given, n_classes, n_sequences)
    if batch.labels is None:
        raise InputError("prior 'all' needs class statistics: give class_prior or training "
                         "data with ground truth")
    if n_classes != len(CLASS_NAMES):
        raise InputError(f"prior 'all' from ground truth needs {len(CLASS_NAMES)} classes, "
                         f"got n_classes = {n_classes}")
    return compute_class_prior(batch)


def _optimizer_to(optimizer: torch.optim.Optimizer, dev: torch.device) -> None:
    """Move loaded optimiser state tensors (except AdamW's scalar step) to ``dev``."""
    for state in optimizer.state.values():
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and key != "step":
                state[key] = value.to(dev)


def _check_resume(stored: dict[str, Any], current: dict[str, Any], run: Path | None) -> None:
    def old(key: str) -> Any:
        return stored.get(key, _RESUME_DEFAULTS.get(key))

    diffs = [f"{key}: checkpoint {old(key)!r}, now {current.get(key)!r}"
             for key in _RESUME_KEYS
             if _normalised(old(key)) != _normalised(current.get(key))]
    if diffs:
        raise CheckpointError(f"cannot resume {str(run)!r} with other settings or data: "
                              + "; ".join(diffs))


def _normalised(value: Any) -> Any:
    """JSON round trip, so that tuples and lists compare equal."""
    import json

    return json.loads(json.dumps(value))


def _save(run: Path, network: torch.nn.Module, optimizer: torch.optim.Optimizer,
          config: dict[str, Any], history: dict[str, list[float]], epoch: int,
          converged: bool, finished: bool) -> None:
    full = {**config, "epoch": epoch, "converged": converged, "finished": finished,
            "history": history, "seconds": float(sum(history["seconds"]))}
    save_checkpoint(run, config=full, model_state=network.state_dict(),
                    optimizer_state=optimizer.state_dict())
    _plot_curve(run / CURVE_FILE, history["nll"], history["loss"], config["model"])
