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

The loss is :mod:`deepgmm.fit.loss`'s (:func:`~deepgmm.fit.loss.batch_loss`). The run's
settings are a :class:`~deepgmm.fit.checkpoint.RunConfig`, which also decides what a
resumed run must share with the stored one. With a ``run_dir``, a checkpoint
(:mod:`deepgmm.fit.checkpoint`) and a training-curve PNG are written after every epoch.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from deepgmm.allocator import tune_cpu_allocator
from deepgmm.data.augment import AugmentConfig, augment_batch
from deepgmm.data.mu_data import check_mu_data
from deepgmm.errors import CheckpointError, FitError, InputError
from deepgmm.fit.checkpoint import (
    Checkpoint,
    RunConfig,
    build_network,
    check_resumable,
    has_checkpoint,
    load_checkpoint,
    recover_checkpoint,
    save_checkpoint,
)
from deepgmm.fit.consistency import consistency_loss, second_view
from deepgmm.fit.labelled import labelled_cross_entropy, labelled_targets
from deepgmm.fit.loss import MODELS, PENALTIES, batch_loss, nll_of_log_resp, pack_slices
from deepgmm.fit.potts import potts_energy
from deepgmm.mixture.likelihood import check_inputs
from deepgmm.mixture.prior import ParameterPrior
from deepgmm.mixture.subclasses import class_log_probabilities, class_params
from deepgmm.nets.context import n_context_channels, network_input
from deepgmm.options import TrainOptions
from deepgmm.types import CLASS_NAMES, SliceBatch

__all__ = ["MODELS", "PENALTIES", "TrainResult", "train_network"]

logger = logging.getLogger(__name__)

ModelName = Literal["deepg", "deepsvg"]
CURVE_FILE = "training_curve.png"
RUN_FOLDER_FILES = ("model.safetensors", "optimizer.safetensors", "config.json",
                    CURVE_FILE, "run.json", "report.html")
"""The files a training run writes into its folder (listed in the folder's manifest)."""


def record_run_files(run_dir: str | os.PathLike[str]) -> None:
    """List the run files present in ``run_dir`` in its manifest
    (:data:`deepgmm.output_paths.MANIFEST`), so the folder counts as deepgmm's own."""
    from deepgmm.output_paths import add_to_manifest

    run = Path(run_dir)
    add_to_manifest(run, [name for name in RUN_FOLDER_FILES if (run / name).is_file()],
                    kind="run")


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


@dataclass
class _Progress:
    """How far a run got: epochs done, per-epoch history, whether it has stopped."""

    history: dict[str, list[float]] = field(
        default_factory=lambda: {"nll": [], "loss": [], "lr": [], "seconds": []})
    epoch: int = 0
    converged: bool = False
    finished: bool = False

    @classmethod
    def stored(cls, config: dict[str, Any]) -> _Progress:
        """The progress recorded in a checkpoint's ``config.json``."""
        history = {k: [float(v) for v in config.get("history", {}).get(k, [])]
                   for k in cls().history}
        return cls(history, int(config["epoch"]), bool(config.get("converged", False)),
                   bool(config.get("finished", False)))

    def to_json(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "converged": self.converged, "finished": self.finished,
                "history": self.history}


def _epoch_seed(seed: int, epoch: int) -> int:
    return (int(seed) * 1_000_003 + int(epoch) * 7919 + 17) % (2**63 - 1)


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


def train_network(batch: SliceBatch, *, model: ModelName = "deepg", lam: float = 1.0,
                  mu_data: Any = None, epochs: int = 100, min_epochs: int = 10,
                  batch_size: int = 4, lr: float = 1e-3, weight_decay: float = 1e-3,
                  tol: float = 5e-3, seed: int = 0, device: str | torch.device = "auto",
                  augment: bool | AugmentConfig = True,
                  run_dir: str | os.PathLike[str] | None = None, resume: bool = False,
                  progress: bool = True, depth: int = 4, base_filters: int = 32,
                  n_classes: int = len(CLASS_NAMES),
                  penalty: Literal["batch", "slice"] = "batch",
                  clip_norm: float | None = 12.0, label_weight: float = 0.0,
                  labelled_slices: int = 10, precision: str = "fp32",
                  context: str = "none", potts_weight: float = 0.0,
                  consistency_weight: float = 0.0, labelled_seed: int = 42,
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
        penalty: ``"batch"`` (published): ``||mean_b mu_b - mu_data||^2`` over the mini-batch;
            ``"slice"``: ``mean_b ||mu_b - mu_data||^2``.
        clip_norm: gradient-norm clipping (``None``: off).
        label_weight: weight of the cross-entropy on the labelled slices (0: none, the
            published loss).
        labelled_slices: how many slices carry their labels when ``label_weight > 0``, drawn
            as μ_data's slices are (with ``labelled_seed``), so with the defaults they are
            the same slices; the same draw gives the class Gaussians that ``predict``
            fuses with the network's probabilities (stored in ``config.json`` when the
            batch has ground truth; :mod:`deepgmm.mixture.fusion`).
        labelled_seed: seed of the draw of the labelled slices (the cross-entropy's, the
            class Gaussians' and, for ``prior="all"`` from ground truth, the class
            prior's); μ_data's default draw uses 42.
        precision: ``"fp32"`` or ``"bf16"`` (the network's convolutions in bfloat16 under
            ``torch.autocast``; weights, optimiser and loss in float32; see
            :mod:`deepgmm.fit.precision`). Recorded in the checkpoint; prediction uses it
            unless told otherwise.
        context: extra network input channels computed from the ROI
            (:mod:`deepgmm.nets.context`): ``"none"`` (published), ``"distance"`` or
            ``"distance+radius"``; computed from the augmented ROI, recorded in the
            checkpoint and applied by prediction. The likelihood sees the image alone.
        potts_weight: weight of the soft Potts energy of the responsibilities
            (:func:`deepgmm.fit.potts.potts_energy`, mean over the mini-batch) added to the
            loss (0: none, the published loss).
        consistency_weight: weight of the Π-model consistency term
            (:mod:`deepgmm.fit.consistency`: the squared difference of the class
            probabilities of each slice and of a flipped, intensity-jittered view of it,
            mean over the mini-batch) added to the loss (0: none, the published loss);
            each step then runs the network on both views.
        prior: ``"means"`` (published): only the μ_data penalty; ``"all"``: also
            ``lam_var`` times the distance of the mini-batch's mean log variances and
            ``lam_weights`` times the KL divergence of its mean weights from the labelled
            slices' (:mod:`deepgmm.mixture.prior`), on the mini-batch as ``penalty`` says.
        lam_var: weight of the log-variance penalty (``prior="all"``).
        lam_weights: weight of the weight penalty (``prior="all"``).
        class_prior: a :class:`~deepgmm.data.class_prior.ClassPrior` (or its ``to_dict``
            form) for ``prior="all"``; when ``None`` it is computed from the training
            slices' ground truth with μ_data's draw (10 slices, ``labelled_seed``). Stored in the
            run's ``config.json``.
        components_per_class: J Gaussian components per class (1: published): the network
            outputs ``n_classes * J`` channels, the mixture is fitted over all of them, the
            penalties act on each class's component mixture
            (:mod:`deepgmm.mixture.subclasses`), the labelled cross-entropy and the Potts
            energy on the class probabilities (sums of a class's components'), as
            prediction does.

    The batch's crop size and normalisation (:class:`~deepgmm.types.SliceBatch`) are
    recorded in the checkpoint for prediction.

    Returns:
        A :class:`TrainResult`.

    Raises:
        InputError: bad settings, lam > 0 without mu_data or labels, a ``run_dir`` that
            already holds a checkpoint without ``resume``.
        CheckpointError: ``resume`` with a checkpoint made with other settings or data.
        FitError: training diverged (non-finite epoch NLL).
    """
    from deepgmm import __version__
    from deepgmm.device import resolve_device
    from deepgmm.fit.precision import network_autocast
    from deepgmm.nets.unet import UNet

    options = TrainOptions.create(
        "train_network", model=model, lam=lam, epochs=epochs, min_epochs=min_epochs,
        batch_size=batch_size, lr=lr, weight_decay=weight_decay, tol=tol, seed=seed,
        device=device, augment=augment, n_classes=n_classes, depth=depth,
        base_filters=base_filters, penalty=penalty, clip_norm=clip_norm,
        label_weight=label_weight, labelled_slices=labelled_slices, precision=precision,
        context=context, potts_weight=potts_weight, consistency_weight=consistency_weight,
        labelled_seed=labelled_seed, prior=prior, lam_var=lam_var,
        lam_weights=lam_weights, components_per_class=components_per_class)
    n_components = n_classes * components_per_class
    dev = resolve_device(device)
    autocast = network_autocast(precision, dev)
    if dev.type == "cpu":
        tune_cpu_allocator()
    run = _run_folder(run_dir, resume)
    if len(batch) == 0:
        raise InputError("the training batch holds no slices")
    aug_cfg = (AugmentConfig() if augment is True else augment) if augment else None
    ckpt = _stored_run(run, batch, n_classes) if resume else None
    mu = _class_means(mu_data, ckpt, batch, lam, n_classes, dev)
    class_stats = _class_prior(prior, class_prior, ckpt, batch, n_classes, labelled_seed)
    gaussians = _class_gaussians(batch, n_classes, labelled_slices, labelled_seed)
    param_prior = None if class_stats is None else ParameterPrior(
        log_variances=torch.as_tensor(class_stats.log_variances, dtype=torch.float32,
                                      device=dev),
        weights=torch.as_tensor(class_stats.weights, dtype=torch.float32, device=dev),
        lam_var=float(lam_var), lam_weights=float(lam_weights))
    target, labelled = None, np.zeros(0, dtype=np.int64)
    if label_weight > 0:
        target, labelled = labelled_targets(batch, labelled_slices, seed=labelled_seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        network = UNet(len(batch.sequences) + n_context_channels(context),
                       n_classes=n_components, depth=depth, base_filters=base_filters)
    network.check_input(network_input(batch.image[:1], batch.roi[:1], context))
    config = RunConfig(
        **options.run_settings(),
        labelled_slices=[[batch.case_ids[i], int(batch.slice_indices[i])] for i in labelled],
        augment=None if aug_cfg is None else dataclasses.asdict(aug_cfg),
        network=network.config, class_names=_class_names(n_classes),
        sequences=list(batch.sequences), normalisation=batch.normalisation,
        crop_size=list(batch.crop_size), mu_data=None if mu is None else mu.cpu().tolist(),
        train_patients=_patients(batch.case_ids), n_slices=len(batch),
        train_slices=[[c, int(z)] for c, z in zip(batch.case_ids, batch.slice_indices,
                                                   strict=True)],
        package_version=__version__, torch_version=torch.__version__, device=str(dev),
        class_prior=None if class_stats is None else class_stats.to_dict(),
        class_gaussians=None if gaussians is None else gaussians.to_dict())
    optimizer = torch.optim.AdamW(network.parameters(), lr=lr, weight_decay=weight_decay)
    done = _Progress() if ckpt is None else _restore(ckpt, config, network, optimizer)
    network.to(dev)
    _optimizer_to(optimizer, dev)
    image = batch.image.to(dev, dtype=torch.float32)
    roi = batch.roi.to(dev, dtype=torch.bool)
    check_inputs(image, roi, n_components=n_components)
    target_dev = None if target is None else target.to(dev)

    def epoch_step(epoch: int, lr_e: float) -> tuple[float, float]:
        for group in optimizer.param_groups:
            group["lr"] = lr_e
        return _run_epoch(network, optimizer, image, roi, model=model, lam=lam, mu=mu,
                          batch_size=batch_size, penalty=penalty, clip_norm=clip_norm,
                          generator_seed=_epoch_seed(seed, epoch), aug_cfg=aug_cfg, dev=dev,
                          target=target_dev,
                          label_weight=label_weight, autocast=autocast,
                          context=context, potts_weight=potts_weight,
                          consistency_weight=consistency_weight,
                          param_prior=param_prior, per_class=components_per_class)

    def save() -> None:
        if run is not None:
            _save(run, network, optimizer, config.to_json(), done.history, done.epoch,
                  done.converged, done.finished)

    _train_epochs(done, epoch_step, config, len(batch), save, progress)
    network.eval()
    return TrainResult(network=network, config={**config.to_json(), **done.to_json()},
                       nll_history=done.history["nll"], loss_history=done.history["loss"],
                       n_epochs=done.epoch, converged=done.converged,
                       seconds=float(sum(done.history["seconds"])), mu_data=mu, run_dir=run,
                       lr_history=done.history["lr"])


def _run_folder(run_dir: str | os.PathLike[str] | None, resume: bool) -> Path | None:
    """The run folder, checked: resume needs one; a fresh run must not hold a checkpoint."""
    run = Path(run_dir) if run_dir is not None else None
    if resume and run is None:
        raise InputError("resume needs a run folder (run_dir)", params=("resume", "run_dir"))
    if run is not None and run.exists() and not run.is_dir():
        raise InputError(f"run folder {str(run)!r} exists and is not a folder")
    if run is not None and not resume and has_checkpoint(run):
        raise InputError(f"{str(run)!r} already holds a checkpoint; pass resume to continue "
                         "it, or choose another run_dir", params=("resume", "run_dir"))
    return run


def _stored_run(run: Path | None, batch: SliceBatch, n_classes: int) -> Checkpoint | None:
    """The checkpoint to resume (with optimiser state), or None when ``run`` holds none."""
    if run is None or not has_checkpoint(run):
        return None
    recover_checkpoint(run)
    return load_checkpoint(run, sequences=tuple(batch.sequences), n_classes=n_classes,
                           with_optimizer=True, device="cpu")


def _class_means(mu_data: Any, ckpt: Checkpoint | None, batch: SliceBatch, lam: float,
                 n_classes: int, dev: torch.device) -> torch.Tensor | None:
    """``(K, M)`` μ_data on ``dev``: given, stored in the resumed checkpoint, or from the
    training slices' ground truth; None when there is none (lam = 0 only)."""
    if mu_data is None and ckpt is not None:
        mu_data = ckpt.config["mu_data"]
    if mu_data is None and batch.labels is not None:
        from deepgmm.data.mu_data import compute_mu_data

        mu_data = compute_mu_data(batch)
    if mu_data is None and lam > 0:
        raise InputError("lam > 0 needs class means: give mu_data or training data with "
                         "ground truth", params=("lam", "mu_data"))
    if mu_data is None:
        return None
    return check_mu_data(mu_data, n_classes, len(batch.sequences), device=dev)


def _class_prior(prior: str, given: Any, ckpt: Checkpoint | None, batch: SliceBatch,
                 n_classes: int, seed: int = 42) -> Any:
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
        return ClassPrior.from_dict(given, n_classes, len(batch.sequences))
    if batch.labels is None:
        raise InputError("prior 'all' needs class statistics: give class_prior or training "
                         "data with ground truth")
    if n_classes != len(CLASS_NAMES):
        raise InputError(f"prior 'all' from ground truth needs {len(CLASS_NAMES)} classes, "
                         f"got n_classes = {n_classes}")
    return compute_class_prior(batch, seed=seed)


def _class_gaussians(batch: SliceBatch, n_classes: int, n_slices: int, seed: int) -> Any:
    """The class Gaussians of the labelled slices that predict's fusion uses
    (:mod:`deepgmm.mixture.fusion`; μ_data's draw: ``n_slices``, ``seed``), or ``None`` when
    the batch has no ground truth, other than four classes, or a class too few labelled
    pixels (predict then warns that it cannot fuse)."""
    from deepgmm.mixture.fusion import fit_class_gaussians

    if batch.labels is None or n_classes != len(CLASS_NAMES):
        return None
    try:
        return fit_class_gaussians(batch, n_slices=n_slices, seed=seed)
    except InputError as err:
        logger.info("no class Gaussians for fusion: %s", err)
        return None


def _class_names(n_classes: int) -> list[str]:
    if n_classes == len(CLASS_NAMES):
        return list(CLASS_NAMES)
    return [f"class{k + 1}" for k in range(n_classes)]


def _patients(case_ids: list[str]) -> list[str]:
    """The distinct case ids, numbers in numeric order first."""
    return sorted(set(case_ids), key=lambda c: (int(c), c) if c.isdigit() else (1 << 62, c))


def _restore(ckpt: Checkpoint, config: RunConfig, network: torch.nn.Module,
             optimizer: torch.optim.Optimizer) -> _Progress:
    """Load a resumable checkpoint's weights and optimiser state; its progress."""
    check_resumable(ckpt.config, config, ckpt.run_dir)
    network.load_state_dict(build_network(ckpt, device="cpu").state_dict())
    try:
        optimizer.load_state_dict(ckpt.optimizer_state)  # type: ignore[arg-type]
    except (ValueError, KeyError, RuntimeError) as err:
        raise CheckpointError(f"optimiser state in {str(ckpt.run_dir)!r} does not fit the "
                              f"network: {err}") from err
    done = _Progress.stored(ckpt.config)
    logger.info("resuming %s at epoch %d", ckpt.run_dir, done.epoch)
    return done


def _train_epochs(done: _Progress, epoch_step: Callable[[int, float], tuple[float, float]],
                  config: RunConfig, n_slices: int, save: Callable[[], None],
                  progress: bool) -> None:
    """Epochs until the stopping rule or ``config.epochs``; updates ``done``, saves after
    each epoch."""
    from tqdm.auto import tqdm

    history = done.history
    bar = tqdm(total=config.epochs, initial=done.epoch, desc=f"train {config.model}",
               unit="epoch", disable=not progress, leave=False)
    try:
        while not done.finished and done.epoch < config.epochs:
            t0 = time.perf_counter()
            lr_e = config.lr * (1.0 - done.epoch / config.epochs) ** 0.9
            nll_sum, loss_sum = epoch_step(done.epoch, lr_e)
            done.epoch += 1
            history["nll"].append(nll_sum / n_slices)
            history["loss"].append(loss_sum / n_slices)
            history["lr"].append(lr_e)
            history["seconds"].append(time.perf_counter() - t0)
            if not math.isfinite(history["nll"][-1]):
                raise FitError(f"training diverged at epoch {done.epoch} (NLL is not finite); "
                               "lower lr or check the images", params=("lr",))
            if done.epoch >= config.min_epochs and len(history["nll"]) >= 2:
                done.converged = abs(history["nll"][-1] - history["nll"][-2]) < config.tol
            done.finished = done.converged or done.epoch >= config.epochs
            bar.update(1)
            bar.set_postfix(nll=f"{history['nll'][-1]:.4f}", lr=f"{lr_e:.2e}")
            save()
    finally:
        bar.close()


def _run_epoch(network: torch.nn.Module, optimizer: torch.optim.Optimizer,
               image: torch.Tensor, roi: torch.Tensor, *, model: str, lam: float,
               mu: torch.Tensor | None, batch_size: int, penalty: str,
               clip_norm: float | None, generator_seed: int,
               aug_cfg: AugmentConfig | None, dev: torch.device,
               target: torch.Tensor | None = None, label_weight: float = 0.0,
               autocast: Callable[[], AbstractContextManager] = nullcontext,
               context: str = "none", potts_weight: float = 0.0,
               consistency_weight: float = 0.0,
               param_prior: ParameterPrior | None = None, per_class: int = 1,
               ) -> tuple[float, float]:
    """One pass over all slices in a seeded random order; returns summed (NLL, loss).

    ``target`` ``(B, H, W)`` holds the labelled slices' classes (0: no label); it is
    augmented with the image and adds ``label_weight`` times their cross-entropy. The
    network runs inside ``autocast()`` (:func:`deepgmm.fit.precision.network_autocast`) on
    the image and the ``context`` channels of the augmented ROI; its logits are cast to
    float32 before the loss, which adds ``potts_weight`` times the slices' mean Potts
    energy. ``param_prior`` adds the variance and weight penalties of ``prior="all"``. With
    ``per_class`` components per class the mixture is fitted over all components, and the
    penalties, the labelled cross-entropy and the Potts energy act on the classes (their
    component mixtures, and the sums of their components' probabilities).
    ``consistency_weight`` adds the Π-model term of a second, flipped and jittered view
    (:mod:`deepgmm.fit.consistency`), drawn from the same generator after the
    augmentation."""
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
            logits = network(network_input(img, msk, context))
        log_resp = torch.log_softmax(logits.float(), dim=1)
        nll, mix = nll_of_log_resp(log_resp, pack_slices(img, msk, validate=False), model,
                                   validate=False)
        mix = class_params(mix, per_class)
        class_log_resp = class_log_probabilities(log_resp, per_class)
        extra = None
        if lab is not None and label_weight > 0:
            extra = label_weight * labelled_cross_entropy(class_log_resp, lab, msk).mean()
        if potts_weight > 0:
            smooth = potts_weight * potts_energy(class_log_resp.exp(), msk).mean()
            extra = smooth if extra is None else extra + smooth
        if consistency_weight > 0:
            view, view_roi, dims = second_view(img, msk, gen)
            with autocast():
                view_logits = network(network_input(view, view_roi, context))
            view_log_resp = class_log_probabilities(
                torch.log_softmax(torch.flip(view_logits.float(), dims), dim=1), per_class)
            agree = consistency_weight * consistency_loss(class_log_resp, view_log_resp,
                                                          msk).mean()
            extra = agree if extra is None else extra + agree
        loss = batch_loss(nll, mix.means, lam=lam, mu_data=mu, penalty=penalty,
                          extra=extra)
        if param_prior is not None:
            loss = loss + param_prior.penalty(mix.weights, mix.covariances,
                                              per_slice=penalty == "slice")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(network.parameters(), clip_norm)
        optimizer.step()
        nll_total += nll.detach().sum()
        loss_total += loss.detach() * idx.numel()
    return float(nll_total), float(loss_total)


def _optimizer_to(optimizer: torch.optim.Optimizer, dev: torch.device) -> None:
    """Move loaded optimiser state tensors (except AdamW's scalar step) to ``dev``."""
    for state in optimizer.state.values():
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and key != "step":
                state[key] = value.to(dev)


def _save(run: Path, network: torch.nn.Module, optimizer: torch.optim.Optimizer,
          config: dict[str, Any], history: dict[str, list[float]], epoch: int,
          converged: bool, finished: bool) -> None:
    full = {**config, "epoch": epoch, "converged": converged, "finished": finished,
            "history": history, "seconds": float(sum(history["seconds"]))}
    save_checkpoint(run, config=full, model_state=network.state_dict(),
                    optimizer_state=optimizer.state_dict())
    _plot_curve(run / CURVE_FILE, history["nll"], history["loss"], config["model"])
