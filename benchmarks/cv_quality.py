"""Cross-validated quality of deepgmm and its baselines: 5 folds by patient over MyoPS 2020.

Every one of the 79 all-class slices of the 25 MyoPS 2020 training patients is scored
exactly once per seed: the patients are split into the 5 fixed folds of ``FOLDS`` (fold 1 is
the paper's dev split 109 114 117 120 122), and a configuration is trained / fitted on the
20 patients outside a fold and scores that fold's slices. Everything a configuration learns
(network weights, μ_data, class Gaussians, any hyperparameter) comes from the 20 training
patients of the fold only. μ_data is ``compute_mu_data(train_batch, n_slices=10,
seed=mu_seed)`` on the training batch normalised as the configuration's slices are, with
``mu_seed = 42 + seed`` unless ``--mu-seed`` fixes it, so the μ_data draw varies with the seed.

Configurations are the named entries of ``REGISTRY``; a new lever is a new entry. A name
``<entry>+lv`` is the entry's cached class probabilities labelled under the LV anatomy rule
(:mod:`deepgmm.anatomy`: one convex blood pool, the wall classes smoothed over 2 mm) instead
of the most likely class: no training of its own, the same units; ``+lv-dice`` labels that
wall for the largest expected Dice (:mod:`deepgmm.decision`), ``+fuse`` first fuses the
probabilities with the fold's labelled class Gaussians, ``+fuse+lv`` / ``+fuse+lv-dice``
both. Each
finished (configuration, fold, seed) unit is cached under ``--cache`` (class probabilities
and label maps as compressed ``.npz``, timing and settings as ``.json``, both written
atomically); a re-run skips finished units, ``--report`` prints the tables from the cache
alone (no training), ``--compare A B`` tests two configurations against each other, patient
by patient (Wilcoxon signed-rank over the 25 patients).

    PYTHONPATH=src .venv/bin/python benchmarks/cv_quality.py \\
        [--configs deepsvg deepg ...] [--folds 1 2 3 4 5] [--seeds 0 1] \\
        [--order seed-major|config-major] [--mu-seed N] [--cache /work/cv-cache] \\
        [--root ../shared/data/myops2020] [--device auto]
    ... benchmarks/cv_quality.py --report [--markdown docs/cv_quality_tables.md]
    ... benchmarks/cv_quality.py --compare deepsvg deepg
    ... benchmarks/cv_quality.py --list
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepgmm._atomic import atomic_path
from deepgmm.data.mu_data import compute_mu_data, draw_slices
from deepgmm.data.slices import make_batch
from deepgmm.evaluate.metrics import dice_per_class
from deepgmm.types import CLASS_NAMES, CaseVolume, SliceBatch

# ---------------------------------------------------------------------------------------------
# Folds
# ---------------------------------------------------------------------------------------------

PATIENTS: tuple[str, ...] = tuple(str(p) for p in range(101, 126))
FOLD_DRAW_SEED = 2020
FOLDS: dict[int, tuple[str, ...]] = {
    1: ("109", "114", "117", "120", "122"),  # the paper's dev split (19 slices)
    # Folds 2-5: the other 20 patients (101-125 in order, fold 1 removed) permuted once with
    # numpy.random.default_rng(2020).permutation, cut into 4 consecutive runs of 5, each
    # sorted (draw_folds() reproduces them; a test checks that).
    2: ("101", "103", "108", "111", "112"),  # 16 slices
    3: ("102", "104", "110", "121", "124"),  # 15 slices
    4: ("107", "113", "115", "118", "123"),  # 13 slices
    5: ("105", "106", "116", "119", "125"),  # 16 slices
}
N_ALL_CLASS_SLICES = 79
MU_SEED_OFFSET = 42
"""μ_data of seed s is drawn with seed ``MU_SEED_OFFSET + s`` (seed 0: the paper's 42)."""
N_MU_SLICES = 10
CROP = (160, 160)
K = len(CLASS_NAMES)


def draw_folds(patients: Sequence[str] = PATIENTS, first: Sequence[str] = FOLDS[1],
               n_folds: int = 5, seed: int = FOLD_DRAW_SEED) -> dict[int, tuple[str, ...]]:
    """The fold split: ``first`` as fold 1, the other patients permuted with
    ``numpy.random.default_rng(seed)`` and cut into ``n_folds - 1`` equal runs, each sorted."""
    rest = [p for p in patients if p not in set(first)]
    perm = np.random.default_rng(seed).permutation(np.array(rest))
    size = len(rest) // (n_folds - 1)
    folds = {1: tuple(sorted(first))}
    for i in range(n_folds - 1):
        folds[i + 2] = tuple(sorted(str(p) for p in perm[i * size:(i + 1) * size]))
    return folds


def fold_of(patient: str, folds: Mapping[int, Sequence[str]] = FOLDS) -> int:
    """The fold whose test patients include ``patient``."""
    for fold, members in folds.items():
        if patient in members:
            return fold
    raise KeyError(f"patient {patient} is in no fold")


def mu_seed_for(seed: int, fixed: int | None = None) -> int:
    """Seed of the μ_data draw for run seed ``seed``: ``fixed`` when given, else 42 + seed."""
    return int(fixed) if fixed is not None else MU_SEED_OFFSET + int(seed)


def fold_batches(volumes: Sequence[CaseVolume], test_patients: Sequence[str], *,
                 normalise: str = "crop", crop_size: tuple[int, int] = CROP,
                 ) -> tuple[SliceBatch, SliceBatch]:
    """``(train, test)`` batches of all-class slices: the cases outside / inside
    ``test_patients``, each normalised on its own slices (nothing crosses between them)."""
    test_ids = set(test_patients)
    train_vols = [v for v in volumes if v.case_id not in test_ids]
    test_vols = [v for v in volumes if v.case_id in test_ids]
    kwargs = {"crop_size": crop_size, "normalisation": normalise, "require_labels": True}
    return make_batch(train_vols, **kwargs), make_batch(test_vols, **kwargs)


# ---------------------------------------------------------------------------------------------
# Configurations
# ---------------------------------------------------------------------------------------------


@dataclass
class FoldData:
    """What a configuration gets for one unit: the fold's batches and μ_data.

    Attributes:
        train: training slices (with labels; image ``(B, M, H, W)``).
        test: test slices (their labels are never shown to the configuration).
        mu_data: ``(K, M)`` from ``N_MU_SLICES`` training slices drawn with ``mu_seed``.
        mu_slices: indices into ``train`` of those slices.
        seed, mu_seed: the run seed and the μ_data seed.
        device: where to compute.
        precision: ``"fp32"`` or ``"bf16"`` for the networks (:mod:`deepgmm.fit.precision`).
    """

    train: SliceBatch
    test: SliceBatch
    mu_data: np.ndarray
    mu_slices: np.ndarray
    seed: int
    mu_seed: int
    device: str = "auto"
    precision: str = "fp32"


@dataclass
class MethodOutput:
    """A configuration's answer for one unit.

    Attributes:
        probs: ``(B, K, H, W)`` float32 class probabilities of the test slices.
        train_seconds: time spent learning from the training fold (0 for per-slice fits).
        predict_seconds: time spent on the test slices.
        learned: what was learned from the training fold (for the leakage tests).
        info: small JSON-able facts (epochs, ...).
    """

    probs: np.ndarray
    train_seconds: float
    predict_seconds: float
    learned: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Method:
    """A registry entry: ``run(FoldData) -> MethodOutput`` on slices normalised ``normalise``."""

    run: Callable[[FoldData], MethodOutput]
    description: str
    normalise: str = "crop"


def _deep(fold: FoldData, *, model: str, normalise: str, **options: Any) -> MethodOutput:
    """The published trained recipe (lam 1, penalty batch, published augmentation, other
    defaults, ``fold.precision``), then ``predict`` on the test fold; class order from
    μ_data. ``options`` go to ``train_network`` (for entries that change a lever)."""
    from deepgmm.fit.predict import predict
    from deepgmm.fit.train import train_network

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        res = train_network(fold.train, model=model, lam=1.0, mu_data=fold.mu_data,
                            seed=fold.seed, device=fold.device, run_dir=Path(tmp) / "run",
                            progress=False, penalty="batch",
                            precision=fold.precision, **options)
        t1 = time.perf_counter()
        out = predict(Path(tmp) / "run", fold.test, device=fold.device)
        t2 = time.perf_counter()
    return MethodOutput(probs=out.responsibilities.numpy().astype(np.float32),
                        train_seconds=t1 - t0, predict_seconds=t2 - t1,
                        learned={"mu_data": np.asarray(res.config["mu_data"])},
                        info={"epochs": res.n_epochs, "converged": res.converged,
                              "precision": fold.precision})


def _deep_labelled(fold: FoldData, *, model: str, normalise: str,
                   **options: Any) -> MethodOutput:
    """As :func:`_deep`, with the cross-entropy of μ_data's labelled slices in the loss:
    ``train_network`` draws its labelled slices as μ_data's were (``N_MU_SLICES`` slices,
    seed ``fold.mu_seed``), so no label beyond μ_data's enters training."""
    out = _deep(fold, model=model, normalise=normalise, labelled_slices=N_MU_SLICES,
                labelled_seed=fold.mu_seed, **options)
    out.learned.update(labelled_slices=np.asarray(fold.mu_slices))
    return out


def fold_class_prior(fold: FoldData) -> Any:
    """Class statistics of the fold's μ_data slices (:mod:`deepgmm.data.class_prior`): the
    same ``N_MU_SLICES`` training slices, drawn with ``fold.mu_seed``."""
    from deepgmm.data.class_prior import compute_class_prior

    return compute_class_prior(fold.train, n_slices=N_MU_SLICES, seed=fold.mu_seed)


def _deep_prior(fold: FoldData, *, model: str, normalise: str, **options: Any,
                ) -> MethodOutput:
    """:func:`_deep` with ``prior="all"``: the class prior from the fold's μ_data slices."""
    stats = fold_class_prior(fold)
    out = _deep(fold, model=model, normalise=normalise, prior="all", class_prior=stats,
                **options)
    out.learned.update(prior_log_variances=stats.log_variances, prior_weights=stats.weights)
    return out


def _em(fold: FoldData, *, model: str, **options: Any) -> MethodOutput:
    """EM per test slice started from μ_data (init="mu_data"), EM seed 33 + seed."""
    from deepgmm.mixture.em import em_segment

    t0 = time.perf_counter()
    from deepgmm.device import resolve_device

    out = em_segment(fold.test, f"em-{model}", init="mu_data", mu_data=fold.mu_data,
                     seed=33 + fold.seed, device=resolve_device(fold.device),
                     **options)
    return MethodOutput(probs=out.responsibilities.numpy().astype(np.float32),
                        train_seconds=0.0, predict_seconds=time.perf_counter() - t0,
                        learned={"mu_data": fold.mu_data},
                        info={"mean_iterations": float(out.n_iter.float().mean())})


def roi_pixels(batch: SliceBatch) -> tuple[np.ndarray, np.ndarray]:
    """``(N, M)`` features and ``(N,)`` labels of every ROI pixel of ``batch``."""
    roi = batch.roi.numpy()
    features = batch.image.numpy().transpose(0, 2, 3, 1)[roi]
    labels = batch.labels.numpy()[roi] if batch.labels is not None else np.zeros(0)
    return features.astype(np.float64), labels


def _qda(fold: FoldData) -> MethodOutput:
    """Class Gaussians (full covariance) fitted to every training ROI pixel's ground truth;
    each test pixel gets its posterior under the training class proportions as priors."""
    from sklearn.discriminant_analysis import QuadraticDiscriminantAnalysis

    t0 = time.perf_counter()
    x, y = roi_pixels(fold.train)
    qda = QuadraticDiscriminantAnalysis(store_covariance=True).fit(x, y)
    t1 = time.perf_counter()
    roi = fold.test.roi.numpy()
    test_x, _ = roi_pixels(fold.test)
    b, _, h, w = fold.test.image.shape
    probs = np.zeros((b, h, w, K), dtype=np.float32)
    probs[roi] = qda.predict_proba(test_x)  # classes_ are 1..K in order
    return MethodOutput(probs=probs.transpose(0, 3, 1, 2).copy(), train_seconds=t1 - t0,
                        predict_seconds=time.perf_counter() - t1,
                        learned={"means": qda.means_, "covariances": np.stack(qda.covariance_),
                                 "priors": qda.priors_, "mu_data": fold.mu_data},
                        info={"classes": [int(c) for c in qda.classes_]})


def _with_context(batch: SliceBatch, context: str) -> SliceBatch:
    """``batch`` with the ROI context channels (:mod:`deepgmm.nets.context`) appended to its
    image as extra features ``(B, M + C, H, W)``."""
    from deepgmm.nets.context import network_input

    image = network_input(batch.image.float(), batch.roi, context)
    names = tuple(batch.sequences) + tuple(context.split("+"))
    return replace(batch, image=image, sequences=names)


def _qda_context(fold: FoldData, *, context: str) -> MethodOutput:
    """As ``_qda``, with the ROI context channels as extra per-pixel features: how much class
    information the channels carry for a per-pixel model that sees the ground truth."""
    return _qda(replace(fold, train=_with_context(fold.train, context),
                        test=_with_context(fold.test, context)))


def train_supervised_unet(batch: SliceBatch, slices: np.ndarray, *, epochs: int, seed: int,
                          device: str = "auto", precision: str = "fp32", batch_size: int = 4,
                          lr: float = 1e-3, weight_decay: float = 1e-3,
                          clip_norm: float = 12.0) -> torch.nn.Module:
    """A supervised reference: the U-Net of ``train_network`` (depth 4, 32 filters) trained
    with cross-entropy inside the ROI on ``batch``'s slices ``slices``.

    Same optimiser, learning-rate decay ``lr * (1 - epoch / epochs) ** 0.9``, gradient
    clipping, published augmentation (labels warped with the image) and precision (bf16
    autocast or fp32) as ``train_network``; a fixed number of epochs (no stopping rule).
    """
    from deepgmm.data.augment import AugmentConfig, augment_batch
    from deepgmm.device import resolve_device
    from deepgmm.fit.labelled import labelled_cross_entropy
    from deepgmm.fit.precision import network_autocast
    from deepgmm.nets.unet import UNet

    dev = resolve_device(device)
    autocast = network_autocast(precision, dev)
    chosen = torch.as_tensor(np.asarray(slices), dtype=torch.long)
    image = batch.image[chosen].to(dev, dtype=torch.float32)
    roi = batch.roi[chosen].to(dev, dtype=torch.bool)
    target = torch.where(roi, batch.labels[chosen].to(dev).long(), 0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        network = UNet(image.shape[1], n_classes=K, depth=4, base_filters=32)
    network.to(dev)
    optimizer = torch.optim.AdamW(network.parameters(), lr=lr, weight_decay=weight_decay)
    aug = AugmentConfig()
    n = image.shape[0]
    network.train()
    for epoch in range(epochs):
        for group in optimizer.param_groups:
            group["lr"] = lr * (1.0 - epoch / epochs) ** 0.9
        gen = torch.Generator(device=dev)
        gen.manual_seed(int(seed) * 1_000_003 + epoch * 7919 + 17)
        order = torch.randperm(n, generator=gen, device=dev)
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            img, msk, lab = augment_batch(image[idx], roi[idx], target[idx], generator=gen,
                                          config=aug)
            with autocast():
                logits = network(img)
            log_resp = torch.log_softmax(logits.float(), dim=1)
            loss = labelled_cross_entropy(log_resp, lab, msk).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(network.parameters(), clip_norm)
            optimizer.step()
    return network.eval()


def unet_probs(network: torch.nn.Module, batch: SliceBatch, *, device: str = "auto",
               precision: str = "fp32", chunk_size: int = 16) -> np.ndarray:
    """``(B, K, H, W)`` softmax of ``network`` on ``batch`` (no gradients)."""
    from deepgmm.device import resolve_device
    from deepgmm.fit.precision import network_autocast

    dev = resolve_device(device)
    autocast = network_autocast(precision, dev)
    parts = []
    with torch.inference_mode():
        for start in range(0, len(batch), chunk_size):
            img = batch.image[start:start + chunk_size].to(dev, dtype=torch.float32)
            with autocast():
                logits = network(img)
            parts.append(torch.softmax(logits.float(), dim=1).cpu())
    return torch.cat(parts).numpy()


def _unet_ce(fold: FoldData, *, labelled: str, epochs: int) -> MethodOutput:
    """Supervised U-Net on the μ_data slices (``labelled="mu"``) or all training slices."""
    slices = fold.mu_slices if labelled == "mu" else np.arange(len(fold.train))
    t0 = time.perf_counter()
    network = train_supervised_unet(fold.train, slices, epochs=epochs, seed=fold.seed,
                                    device=fold.device, precision=fold.precision)
    t1 = time.perf_counter()
    probs = unet_probs(network, fold.test, device=fold.device, precision=fold.precision)
    return MethodOutput(probs=probs.astype(np.float32), train_seconds=t1 - t0,
                        predict_seconds=time.perf_counter() - t1,
                        learned={"labelled_slices": np.asarray(slices)},
                        info={"epochs": epochs, "labelled_slices": int(len(slices)),
                              "precision": fold.precision})


REGISTRY: dict[str, Method] = {
    "deepsvg": Method(partial(_deep, model="deepsvg", normalise="crop"),
                      "deepSVG trained on the training fold, published recipe (lam 1, "
                      "penalty batch, published augmentation)"),
    "deepg": Method(partial(_deep, model="deepg", normalise="crop"),
                    "deepG trained on the training fold, published recipe"),
    "deepsvg-roinorm": Method(partial(_deep, model="deepsvg", normalise="roi"),
                              "as deepsvg, every slice z-scored over the ROI", normalise="roi"),
    "deepsvg-ctx-dist": Method(partial(_deep, model="deepsvg", normalise="crop",
                                       context="distance"),
                               "as deepsvg, the ROI border distance as an extra network input "
                               "channel (deepgmm.nets.context)"),
    "deepsvg-ctx-distrad": Method(partial(_deep, model="deepsvg", normalise="crop",
                                          context="distance+radius"),
                                  "as deepsvg, ROI border distance and radius as extra network "
                                  "input channels"),
    "deepsvg-potts1": Method(partial(_deep, model="deepsvg", normalise="crop",
                                     potts_weight=1.0),
                             "as deepsvg, + 1 x the soft Potts energy of the responsibilities "
                             "in the loss (deepgmm.fit.potts)"),
    "deepsvg-ctx-potts1": Method(partial(_deep, model="deepsvg", normalise="crop",
                                         context="distance+radius", potts_weight=1.0),
                                 "deepsvg-ctx-distrad and deepsvg-potts1 together"),
    "deepsvg-roinorm-ctx": Method(partial(_deep, model="deepsvg", normalise="roi",
                                          context="distance+radius"),
                                  "deepsvg-roinorm with the ctx-distrad channels",
                                  normalise="roi"),
    "deepsvg-roinorm-potts1": Method(partial(_deep, model="deepsvg", normalise="roi",
                                             potts_weight=1.0),
                                     "deepsvg-roinorm with the potts1 term", normalise="roi"),
    "deepsvg-ce1": Method(partial(_deep_labelled, model="deepsvg", normalise="crop",
                                  label_weight=1.0),
                          "as deepsvg, + 1 x the cross-entropy of the 10 labelled mu_data "
                          "slices (the only labels mu_data uses)"),
    "deepsvg-cons1": Method(partial(_deep, model="deepsvg", normalise="crop",
                                    consistency_weight=1.0),
                            "as deepsvg, + 1 x the consistency of each slice's class "
                            "probabilities with a flipped, jittered view's "
                            "(deepgmm.fit.consistency)"),
    "deepsvg-ce1-cons1": Method(partial(_deep_labelled, model="deepsvg", normalise="crop",
                                        label_weight=1.0, consistency_weight=1.0),
                                "semi-supervised: deepsvg-ce1 and deepsvg-cons1 together"),
    "deepsvg-ctx-ce1": Method(partial(_deep_labelled, model="deepsvg", normalise="crop",
                                      context="distance+radius", label_weight=1.0),
                              "deepsvg-ctx-distrad and deepsvg-ce1 together"),
    "qda-ctx-distrad": Method(partial(_qda_context, context="distance+radius"),
                              "as qda, with ROI border distance and radius as two more "
                              "features per pixel"),
    "em-svgmm-smooth4": Method(partial(_em, model="svgmm", smoothing=4.0),
                               "EM-SVGMM per test slice, smoothing 4, init from mu_data"),
    "em-gmm-mu": Method(partial(_em, model="gmm"), "EM-GMM per test slice, init from mu_data"),
    "qda": Method(_qda, "class Gaussians (full covariance) fitted to the training ROI "
                        "pixels' ground truth, priors = training class proportions"),
    "unet-ce-10": Method(partial(_unet_ce, labelled="mu", epochs=100),
                         "U-Net, cross-entropy on the 10 mu_data slices, 100 epochs"),
    "unet-ce-all": Method(partial(_unet_ce, labelled="all", epochs=40),
                          "U-Net, cross-entropy on every training slice, 40 epochs"),
    "deepsvg-prior": Method(partial(_deep_prior, model="deepsvg", normalise="crop",
                                    lam_var=1.0, lam_weights=1.0),
                            "as deepsvg, + priors on the batch-mean log variances (lam_var 1) "
                            "and weights (KL, lam_weights 1) from the mu_data slices"),
    "deepsvg-prior-roinorm": Method(partial(_deep_prior, model="deepsvg", normalise="roi",
                                            lam_var=1.0, lam_weights=1.0),
                                    "deepsvg-prior with every slice z-scored over the ROI",
                                    normalise="roi"),
    "deepsvg-2comp": Method(partial(_deep, model="deepsvg", normalise="crop",
                                    components_per_class=2),
                            "as deepsvg, 2 Gaussian components per class (8 network "
                            "outputs, class = sum), mu_data penalty on each class's "
                            "component-mixture mean"),
    "deepsvg-ctx-prior": Method(partial(_deep_prior, model="deepsvg", normalise="crop",
                                        context="distance+radius", lam_var=1.0,
                                        lam_weights=1.0),
                                "deepsvg-ctx-distrad and deepsvg-prior together"),
    "deepsvg-ctx-2comp": Method(partial(_deep, model="deepsvg", normalise="crop",
                                        context="distance+radius", components_per_class=2),
                                "deepsvg-ctx-distrad and deepsvg-2comp together"),
}


def run_unit(method: Method, train: SliceBatch, test: SliceBatch, *, seed: int,
             mu_seed: int, device: str = "auto", precision: str = "fp32") -> MethodOutput:
    """Compute μ_data on ``train`` (only) and run ``method`` on one fold."""
    mu_slices = draw_slices(len(train), N_MU_SLICES, mu_seed)
    mu = compute_mu_data(train, n_slices=N_MU_SLICES, seed=mu_seed)
    fold = FoldData(train=train, test=test, mu_data=mu, mu_slices=mu_slices, seed=seed,
                    mu_seed=mu_seed, device=device, precision=precision)
    return method.run(fold)


# ---------------------------------------------------------------------------------------------
# Cache
# ---------------------------------------------------------------------------------------------


def unit_key(config: str, fold: int, seed: int, mu_seed: int) -> str:
    """Relative path stem of a unit in the cache: ``config/fold<f>-seed<s>-mu<m>``."""
    return f"{config}/fold{int(fold)}-seed{int(seed)}-mu{int(mu_seed)}"


def parse_key(stem: str) -> tuple[int, int, int]:
    """``(fold, seed, mu_seed)`` of a cache stem ``fold<f>-seed<s>-mu<m>``."""
    fold, seed, mu = stem.split("-")
    return int(fold.removeprefix("fold")), int(seed.removeprefix("seed")), int(
        mu.removeprefix("mu"))


def is_cached(cache: Path, key: str) -> bool:
    """A unit is finished when its JSON exists (written after its ``.npz``)."""
    return (cache / f"{key}.json").is_file() and (cache / f"{key}.npz").is_file()


def save_unit(cache: Path, key: str, test: SliceBatch, out: MethodOutput,
              meta: dict[str, Any]) -> None:
    """Write the unit's arrays (``.npz``) and then its metadata (``.json``), atomically."""
    roi = test.roi.numpy()
    pred = np.where(roi, out.probs.argmax(axis=1) + 1, 0).astype(np.uint8)
    arrays = {"probs": out.probs.astype(np.float16), "pred": pred,
              "truth": test.labels.numpy().astype(np.uint8), "roi": roi,
              "case_ids": np.asarray(test.case_ids), "slices": np.asarray(test.slice_indices),
              "spacing": np.asarray(test.spacing, dtype=np.float64)}
    with atomic_path(cache / f"{key}.npz") as tmp:
        np.savez_compressed(tmp, **arrays)
    with atomic_path(cache / f"{key}.json") as tmp:
        tmp.write_text(json.dumps(meta, indent=1) + "\n")


@dataclass
class Unit:
    """A cached unit: label maps and per-slice Dice of one (config, fold, seed)."""

    fold: int
    seed: int
    case_ids: np.ndarray
    slices: np.ndarray
    pred: np.ndarray
    truth: np.ndarray
    dice: np.ndarray  # (S, K)
    meta: dict[str, Any]


LABEL_RULES = ("lv", "lv-dice", "fuse", "fuse+lv", "fuse+lv-dice")
"""Suffixes ``+<rule>`` of a configuration name: its cached units' class probabilities
fused with the training fold's labelled class Gaussians (``fuse``,
:mod:`deepgmm.mixture.fusion`) and / or labelled under an LV anatomy rule (``lv``: the most
likely wall class; ``lv-dice``: the wall labelled for the largest expected Dice,
:mod:`deepgmm.decision`)."""


def split_config(name: str) -> tuple[str, str]:
    """``"deepsvg+lv"`` -> ``("deepsvg", "lv")``; a plain entry -> ``(name, "none")``."""
    base, plus, rule = name.partition("+")
    return (base, rule) if plus else (name, "none")


def config_names() -> list[str]:
    """Every configuration name: the registry's entries and their ``+<rule>`` variants."""
    return [*REGISTRY, *(f"{c}+{r}" for r in LABEL_RULES for c in REGISTRY)]


def case_spacing(root: Path) -> dict[str, np.ndarray]:
    """Case id -> in-plane spacing ``(2,)`` mm from the NIfTI headers under ``root`` (for
    units cached before their spacing was)."""
    import nibabel as nib

    out = {}
    for path in sorted(Path(root).glob("*/*_C0.nii.gz")):
        out[path.name.split("_")[-2]] = np.asarray(nib.load(str(path)).header.get_zooms()[:2],
                                                   dtype=np.float64)
    return out


def load_units(cache: Path, config: str, mu_seed: int | None = None,
               root: Path | None = None) -> list[Unit]:
    """Every cached unit of ``config`` whose μ_data seed follows the rule of ``mu_seed``; a
    ``+lv`` name relabels its entry's units under the anatomy rule (spacing from the unit,
    or from the headers under ``root`` for older units; ``+lv-dice`` likewise under the
    rule ``lv-dice``); a ``+fuse`` name first fuses the
    unit's probabilities with the class Gaussians of the fold's μ_data slices (the
    training batch of that fold and normalisation, the unit's μ_data draw)."""
    from deepgmm.anatomy import apply_anatomy

    base, rule = split_config(config)
    steps = set(rule.split("+"))
    spacing_of: dict[str, np.ndarray] | None = None
    fuser = _Fuser(root or DEFAULT_ROOT) if "fuse" in steps else None
    units = []
    for path in sorted((cache / base).glob("fold*-seed*-mu*.json")):
        fold, seed, mu = parse_key(path.stem)
        if mu != mu_seed_for(seed, mu_seed) or not path.with_suffix(".npz").is_file():
            continue
        meta = json.loads(path.read_text())
        with np.load(path.with_suffix(".npz")) as data:
            pred, truth = data["pred"].astype(np.int64), data["truth"].astype(np.int64)
            probs = data["probs"]
            if fuser is not None:
                probs = fuser.fuse(probs, fold, mu, str(meta.get("normalise", "crop")),
                                   truth)
                pred = np.where(data["roi"], probs.argmax(axis=1) + 1, 0).astype(np.int64)
            anatomy = next((r for r in ("lv", "lv-dice") if r in steps), None)
            if anatomy is not None:
                if "spacing" in data:
                    spacing = data["spacing"]
                else:
                    spacing_of = spacing_of or case_spacing(root or DEFAULT_ROOT)
                    spacing = np.stack([spacing_of[str(c)] for c in data["case_ids"]])
                pred = apply_anatomy(anatomy, probs, data["roi"], spacing)
            units.append(Unit(fold=fold, seed=seed, case_ids=data["case_ids"].astype(str),
                              slices=data["slices"], pred=pred, truth=truth,
                              dice=dice_per_class(pred, truth), meta=meta))
    return units


class _Fuser:
    """Fusion of cached units with their fold's labelled class Gaussians: the fold batches
    are made from the data under ``root`` once per (fold, normalisation)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._volumes: list[CaseVolume] | None = None
        self._batches: dict[tuple[int, str, tuple[int, int]],
                            tuple[SliceBatch, SliceBatch]] = {}

    def fuse(self, probs: np.ndarray, fold: int, mu_seed: int, normalise: str,
             truth: np.ndarray) -> np.ndarray:
        from deepgmm.data.dataset import load_dataset
        from deepgmm.mixture.fusion import fit_class_gaussians, fuse_probabilities

        crop = (int(truth.shape[-2]), int(truth.shape[-1]))  # the unit's crop size
        if (fold, normalise, crop) not in self._batches:
            if self._volumes is None:
                self._volumes = load_dataset(self.root)
            self._batches[(fold, normalise, crop)] = fold_batches(
                self._volumes, FOLDS[fold], normalise=normalise, crop_size=crop)
        train, test = self._batches[(fold, normalise, crop)]
        if not np.array_equal(test.labels.numpy(), truth):
            raise ValueError(f"fold {fold}: the data under {self.root} do not give the "
                             "cached unit's slices")
        gaussians = fit_class_gaussians(train, n_slices=N_MU_SLICES, seed=mu_seed)
        fused = fuse_probabilities(torch.as_tensor(probs, dtype=torch.float32), test.image,
                                   test.roi, gaussians)
        return fused.numpy()


# ---------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------


def dice_3d_per_case(pred: np.ndarray, truth: np.ndarray, case_ids: Sequence[str],
                     ) -> dict[str, tuple[float, float]]:
    """MyoPS challenge-style figures per case: 3D Dice of scar and of edema ∪ scar.

    Args:
        pred, truth: ``(S, H, W)`` label maps (3 edema, 4 scar).
        case_ids: length-S case of each slice; a case's slices are pooled into one volume.

    Returns:
        case -> ``(scar Dice, edema ∪ scar Dice)``; NaN where both are empty.
    """
    case_ids = np.asarray(case_ids)
    out = {}
    for case in dict.fromkeys(case_ids.tolist()):
        sel = case_ids == case
        p, t = pred[sel], truth[sel]
        scores = []
        for classes in ((4,), (3, 4)):
            a, b = np.isin(p, classes), np.isin(t, classes)
            total = int(a.sum() + b.sum())
            scores.append(2.0 * float((a & b).sum()) / total if total else math.nan)
        out[str(case)] = (scores[0], scores[1])
    return out


def patient_means(values: np.ndarray, patients: Sequence[str]) -> dict[str, np.ndarray]:
    """Patient -> ``(C,)`` nan-mean of ``values (S, C)`` over the patient's slices."""
    patients = np.asarray(patients)
    with warnings.catch_warnings():  # a class absent from all of a patient's slices: NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        return {str(p): np.nanmean(values[patients == p], axis=0)
                for p in dict.fromkeys(patients.tolist())}


def bootstrap_ci(values: np.ndarray, patients: Sequence[str], *, n_boot: int = 2000,
                 level: float = 0.95, seed: int = 0) -> np.ndarray:
    """Percentile interval of the mean over slices, resampling patients with replacement.

    Args:
        values: ``(S, C)`` per-slice scores.
        patients: length-S patient of each slice.
        n_boot: bootstrap resamples.
        level: coverage.
        seed: of the resampling.

    Returns:
        ``(C, 2)`` lower and upper bounds; every resample is the slice mean of the slices of
        the drawn patients (a patient drawn twice counts twice).
    """
    patients = np.asarray(patients)
    ids, index = np.unique(patients, return_inverse=True)
    n_p = len(ids)
    sums = np.zeros((n_p, values.shape[1]))
    np.add.at(sums, index, np.nan_to_num(values))
    counts = np.zeros((n_p, values.shape[1]))
    np.add.at(counts, index, ~np.isnan(values))
    draws = np.random.default_rng(seed).integers(0, n_p, size=(n_boot, n_p))
    weights = np.stack([np.bincount(d, minlength=n_p) for d in draws])  # (n_boot, P)
    means = (weights @ sums) / (weights @ counts)
    alpha = (1.0 - level) / 2.0
    return np.quantile(means, [alpha, 1.0 - alpha], axis=0).T


@dataclass
class Paired:
    """Per-patient differences A - B of one score and their Wilcoxon signed-rank test."""

    patients: list[str]
    differences: np.ndarray  # (P,)
    mean: float
    p_value: float


def paired_comparison(a: Mapping[str, float], b: Mapping[str, float]) -> Paired:
    """A - B over the patients both have; ``scipy.stats.wilcoxon`` p-value (two-sided; NaN
    when every difference is 0)."""
    from scipy.stats import wilcoxon

    patients = [p for p in a if p in b]
    diff = np.array([a[p] - b[p] for p in patients], dtype=np.float64)
    p_value = math.nan if not np.any(diff != 0) else float(wilcoxon(diff).pvalue)
    return Paired(patients=patients, differences=diff, mean=float(diff.mean()),
                  p_value=p_value)


@dataclass
class Summary:
    """A configuration's scores over the seeds whose 5 folds are all cached (or, when none
    is, over the units there are: a partial row)."""

    config: str
    seeds: list[int]
    partial: bool
    n_slices: int
    slice_dice: np.ndarray  # (S, K), averaged over the seeds
    patients: np.ndarray  # (S,)
    seed_means: np.ndarray  # (n_seeds, K)
    case_3d: dict[str, tuple[float, float]]
    train_seconds: float  # per fold, mean over units
    n_units: int
    precision: str
    latest: str = ""  # when the last of its units finished
    slice_keys: list[tuple[str, int]] = field(default_factory=list)  # (case, slice) of rows


def summarise(config: str, units: Sequence[Unit],
              folds: Mapping[int, Sequence[str]] = FOLDS) -> Summary | None:
    """Combine the units of one configuration (``None`` without any)."""
    if not units:
        return None
    by_seed: dict[int, list[Unit]] = {}
    for u in units:
        by_seed.setdefault(u.seed, []).append(u)
    complete = sorted(s for s, us in by_seed.items() if {u.fold for u in us} >= set(folds))
    seeds = complete or sorted(by_seed)
    chosen = [u for u in units if u.seed in seeds]
    keys: dict[tuple[str, int], list[int]] = {}
    rows, per_seed = [], {}
    for u in chosen:
        for i, (c, z) in enumerate(zip(u.case_ids, u.slices, strict=True)):
            keys.setdefault((str(c), int(z)), []).append(len(rows))
            rows.append((u, i))
        per_seed.setdefault(u.seed, []).append(u.dice)
    order = sorted(keys, key=lambda k: (int(k[0]) if k[0].isdigit() else 0, k[0], k[1]))
    slice_dice = np.stack([np.mean([rows[j][0].dice[rows[j][1]] for j in keys[k]], axis=0)
                           for k in order])
    patients = np.array([k[0] for k in order])
    seed_means = np.stack([np.nanmean(np.concatenate(per_seed[s]), axis=0) for s in seeds])
    case_scores: dict[str, list[tuple[float, float]]] = {}
    for u in chosen:
        for case, score in dice_3d_per_case(u.pred, u.truth, u.case_ids).items():
            case_scores.setdefault(case, []).append(score)
    with warnings.catch_warnings():  # a case without edema / scar anywhere: NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        case_3d = {c: tuple(np.nanmean(np.array(v), axis=0)) for c, v in case_scores.items()}
    precision = sorted({str(u.meta.get("precision", "")) for u in chosen})
    return Summary(config=config, seeds=seeds, partial=not complete, n_slices=len(order),
                   slice_dice=slice_dice, patients=patients, seed_means=seed_means,
                   case_3d=case_3d,  # type: ignore[arg-type]
                   train_seconds=float(np.mean([u.meta["train_seconds"] for u in chosen])),
                   n_units=len(chosen), precision="/".join(p for p in precision if p),
                   latest=max(str(u.meta.get("finished", "")) for u in chosen),
                   slice_keys=order)


def compare(a: Summary, b: Summary) -> dict[str, Paired]:
    """Class name -> paired comparison of the per-patient Dice (patient = mean over its
    slices, averaged over the seeds of each summary)."""
    pa, pb = (patient_means(s.slice_dice, s.patients) for s in (a, b))
    return {name: paired_comparison({p: float(v[k]) for p, v in pa.items()},
                                    {p: float(v[k]) for p, v in pb.items()})
            for k, name in enumerate(CLASS_NAMES)}


# ---------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*header)] + [fmt.format(*r) for r in rows])


def _status(s: Summary) -> str:
    seeds = ",".join(str(x) for x in s.seeds)
    return (f"partial: seed {seeds}, {s.n_slices}/{N_ALL_CLASS_SLICES} slices" if s.partial
            else f"seeds {seeds}")


def report_tables(summaries: Sequence[Summary], *, markdown: bool = False,
                  n_boot: int = 2000) -> str:
    """The three tables: Dice with bootstrap intervals, mean ± sd over seeds, 3D figures."""
    rows1, rows2, rows3 = [], [], []
    for s in summaries:
        mean = np.nanmean(s.slice_dice, axis=0)
        ci = bootstrap_ci(s.slice_dice, s.patients, n_boot=n_boot)
        rows1.append([s.config, _status(s)]
                     + [f"{m:.3f} [{lo:.3f}, {hi:.3f}]" for m, (lo, hi) in zip(mean, ci,
                                                                                strict=True)]
                     + [f"{s.train_seconds:.1f}", s.precision or "-"])
        sd = s.seed_means.std(axis=0, ddof=1) if len(s.seeds) > 1 else np.full(K, np.nan)
        rows2.append([s.config, str(len(s.seeds))]
                     + [f"{m:.3f} ± {d:.3f}" if len(s.seeds) > 1 else f"{m:.3f}"
                        for m, d in zip(s.seed_means.mean(axis=0), sd, strict=True)])
        cases = np.array(list(s.case_3d.values()), dtype=np.float64)  # (P, 2)
        m3, d3 = np.nanmean(cases, axis=0), np.nanstd(cases, axis=0, ddof=1)
        rows3.append([s.config, str(len(cases)), f"{m3[0]:.3f} ± {d3[0]:.3f}",
                      f"{m3[1]:.3f} ± {d3[1]:.3f}"])
    h = "### " if markdown else ""
    names = list(CLASS_NAMES)
    n_units = sum(s.n_units for s in summaries)
    latest = max((s.latest for s in summaries if s.latest), default="?")
    parts = [
        f"{n_units} cached unit(s) (configuration, fold, seed) in these tables, the latest "
        f"finished {latest}; a row "
        "uses only the seeds whose 5 folds are all cached, and is marked partial (its "
        "slices only) when no seed is complete yet.",
        f"{h}Dice per class, mean over slices (seed-averaged per slice), 95 % bootstrap "
        "interval by patient",
        _table(["config", "units"] + names + ["train s / fold", "precision"], rows1, markdown),
        f"{h}Dice per class, mean ± sd over seeds (each seed: mean over its slices)",
        _table(["config", "seeds"] + names, rows2, markdown),
        f"{h}MyoPS challenge-style per case: 3D Dice over the case's all-class slices, "
        "mean ± sd over cases",
        _table(["config", "cases", "scar", "edema ∪ scar"], rows3, markdown),
    ]
    return "\n\n".join(parts) + "\n"


def compare_table(a: Summary, b: Summary, *, markdown: bool = False) -> str:
    """Paired per-patient comparison of two summaries, one row per class."""
    rows = []
    for name, res in compare(a, b).items():
        wins = int((res.differences > 0).sum())
        rows.append([name, f"{res.mean:+.4f}", f"{wins}/{len(res.patients)}",
                     f"{res.p_value:.3g}", "yes" if res.p_value < 0.05 else "no"])
    title = (f"{a.config} ({_status(a)}) - {b.config} ({_status(b)}), per patient "
             f"(Wilcoxon signed-rank)")
    return title + "\n\n" + _table(["class", "mean difference", "patients A > B", "p",
                                    "p < 0.05"], rows, markdown) + "\n"


def gap_closed(baseline: Summary, candidate: Summary, reference: Summary,
               ) -> tuple[int, np.ndarray]:
    """On the slices all three score: ``(n_slices, (4, K))``, the rows being the baseline's,
    the candidate's and the reference's mean Dice and the share of the gap between baseline
    and reference that the candidate closes, ``(c - b) / (r - b)``."""
    common = set(baseline.slice_keys) & set(candidate.slice_keys) & set(reference.slice_keys)
    if not common:
        raise ValueError("the three configurations share no scored slice")

    def mean(s: Summary) -> np.ndarray:
        rows = [i for i, k in enumerate(s.slice_keys) if k in common]
        return np.nanmean(s.slice_dice[rows], axis=0)

    b, c, r = mean(baseline), mean(candidate), mean(reference)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = (c - b) / (r - b)
    return len(common), np.stack([b, c, r, share])


def gap_table(baseline: Summary, candidate: Summary, reference: Summary, *,
              markdown: bool = False) -> str:
    """:func:`gap_closed` as a table, one column per class."""
    n, values = gap_closed(baseline, candidate, reference)
    names = [f"{s.config} ({_status(s)})" for s in (baseline, candidate, reference)]
    rows = [[name, *(f"{v:.3f}" for v in row)] for name, row in zip(names, values[:3],
                                                                     strict=True)]
    rows.append(["share of the gap closed", *(f"{100 * v:.1f} %" for v in values[3])])
    title = f"On the {n} slices all three score (mean Dice per class)"
    return title + "\n\n" + _table(["", *CLASS_NAMES], rows, markdown) + "\n"


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

_BESIDE = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "myops2020"
DEFAULT_ROOT = _BESIDE if _BESIDE.is_dir() else Path("/work/shared/data/myops2020")
DEFAULT_CACHE = Path("/work/cv-cache")


TABLES_START = "<!-- cv-quality tables: start -->"
TABLES_END = "<!-- cv-quality tables: end -->"


def write_markdown(path: Path, tables: str) -> None:
    """Write ``tables`` to ``path`` atomically: between the ``TABLES_START`` / ``TABLES_END``
    markers when the file has them (the rest of the page is kept), else as the whole file."""
    old = path.read_text() if path.is_file() else ""
    if TABLES_START in old and TABLES_END in old.split(TABLES_START, 1)[1]:
        head, rest = old.split(TABLES_START, 1)
        tail = rest.split(TABLES_END, 1)[1]
        text = f"{head}{TABLES_START}\n\n{tables.strip()}\n\n{TABLES_END}{tail}"
    else:
        text = tables
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def plan(configs: Sequence[str], folds: Sequence[int], seeds: Sequence[int],
         order: str) -> list[tuple[str, int, int]]:
    """The units to run: seed-major (every config's seed s over all folds before seed s+1)
    or config-major."""
    if order == "seed-major":
        return [(c, f, s) for s in seeds for c in configs for f in folds]
    return [(c, f, s) for c in configs for s in seeds for f in folds]


def resolve_precision(precision: str, device: str) -> str:
    """``"auto"``: bf16 where the device multiplies bfloat16 in hardware, else fp32."""
    from deepgmm.device import resolve_device
    from deepgmm.fit.precision import bf16_is_fast

    if precision != "auto":
        return precision
    return "bf16" if bf16_is_fast(resolve_device(device)) else "fp32"


def run_study(args: argparse.Namespace) -> None:
    from deepgmm.allocator import tune_cpu_allocator
    from deepgmm.data.dataset import load_dataset
    from deepgmm.device import resolve_device

    tune_cpu_allocator()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    precision = resolve_precision(args.precision, args.device)
    units = [(c, f, s) for c, f, s in plan(args.configs, args.folds, args.seeds or [0],
                                           args.order)
             if not is_cached(args.cache, unit_key(c, f, s, mu_seed_for(s, args.mu_seed)))]
    print(f"{len(units)} unit(s) to run, cache {args.cache}, networks in {precision}",
          flush=True)
    if not units:
        return
    volumes = load_dataset(args.root)
    batches: dict[tuple[int, str], tuple[SliceBatch, SliceBatch]] = {}
    failed: list[tuple[str, int, int]] = []
    for config, fold, seed in units:
        method = REGISTRY[config]
        mu_seed = mu_seed_for(seed, args.mu_seed)
        if (fold, method.normalise) not in batches:
            batches[(fold, method.normalise)] = fold_batches(
                volumes, FOLDS[fold], normalise=method.normalise)
        train, test = batches[(fold, method.normalise)]
        t0 = time.perf_counter()
        try:
            out = run_unit(method, train, test, seed=seed, mu_seed=mu_seed,
                           device=args.device, precision=precision)
        except Exception:  # one failed unit must not stop a long study; it is not cached
            failed.append((config, fold, seed))
            print(f"FAILED {config} fold {fold} seed {seed}:\n{traceback.format_exc()}",
                  flush=True)
            continue
        wall = time.perf_counter() - t0
        meta = {"config": config, "description": method.description, "fold": fold,
                "seed": seed, "mu_seed": mu_seed, "normalise": method.normalise,
                "test_patients": list(FOLDS[fold]),
                "train_patients": sorted(set(train.case_ids)), "n_train": len(train),
                "n_test": len(test), "train_seconds": out.train_seconds,
                "predict_seconds": out.predict_seconds, "wall_seconds": wall,
                "precision": out.info.get("precision", "-"),
                "info": out.info, "torch_threads": torch.get_num_threads(),
                "device": str(resolve_device(args.device)), "torch_version": torch.__version__,
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        save_unit(args.cache, unit_key(config, fold, seed, mu_seed), test, out, meta)
        pred = np.where(test.roi.numpy(), out.probs.argmax(axis=1) + 1, 0)
        dice = np.nanmean(dice_per_class(pred, test.labels.numpy()), axis=0)
        print(f"{config:<18} fold {fold} seed {seed} (mu {mu_seed}): "
              + " ".join(f"{n} {d:.3f}" for n, d in zip(CLASS_NAMES, dice, strict=True))
              + f"  train {out.train_seconds:.1f} s, wall {wall:.1f} s", flush=True)
    if failed:
        print(f"{len(failed)} unit(s) failed: {failed}", flush=True)
        raise SystemExit(1)


def summaries_from_cache(cache: Path, configs: Sequence[str],
                         mu_seed: int | None, root: Path | None = None,
                         seeds: Sequence[int] | None = None) -> list[Summary]:
    """One summary per configuration with cached units; ``seeds``: only those seeds' units
    (None: every seed; a row then uses the seeds whose five folds are all cached)."""
    out = []
    for config in configs:
        units = load_units(cache, config, mu_seed, root)
        if seeds is not None:
            units = [u for u in units if u.seed in set(seeds)]
        s = summarise(config, units)
        if s is not None:
            out.append(s)
    return out


def _named_summaries(args: argparse.Namespace, names: Sequence[str], flag: str,
                     ) -> list[Summary]:
    """The cached summaries of ``names`` in order (``--compare`` / ``--gap``); an unknown or
    uncached name ends the run with one error line naming ``flag``."""
    unknown = [c for c in names if c not in config_names()]
    if unknown:
        _fail(f"{flag}: unknown configuration(s) {', '.join(unknown)}; expected some of "
              f"{', '.join(REGISTRY)} (or <entry>+<rule>)")
    found = {s.config: s for s in summaries_from_cache(args.cache, names, args.mu_seed,
                                                        args.root, args.seeds)}
    missing = [c for c in names if c not in found]
    if missing:
        _fail(f"{flag}: nothing cached for {', '.join(missing)} in {args.cache}")
    return [found[c] for c in names]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--configs", nargs="+", choices=config_names(),
                        default=None, metavar="CONFIG",
                        help="entries of --list, or <entry>+<rule> with a rule of "
                             f"{', '.join(LABEL_RULES)} (its units fused and / or under an "
                             "LV anatomy rule; no training of its own)")
    parser.add_argument("--folds", nargs="+", type=int, choices=sorted(FOLDS),
                        default=sorted(FOLDS))
    parser.add_argument("--seeds", nargs="+", type=int, default=None,
                        help="seeds to run (default: 0); with --report, --compare or "
                             "--gap: only these seeds' units (default: every seed)")
    parser.add_argument("--mu-seed", type=int, default=None,
                        help=f"seed of every μ_data draw (default: {MU_SEED_OFFSET} + seed)")
    parser.add_argument("--order", choices=("seed-major", "config-major"), default="seed-major")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                        help="the networks' arithmetic (auto: bf16 where the hardware has "
                             "it, else fp32); recorded per unit and shown in the tables")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's choice); on a shared "
                             "machine 1 avoids the threads waiting for each other")
    parser.add_argument("--report", action="store_true", help="print tables from the cache")
    parser.add_argument("--markdown", type=Path, default=None,
                        help="with --report or --compare: also write the tables as Markdown")
    parser.add_argument("--compare", nargs=2, metavar=("A", "B"), default=None)
    parser.add_argument("--gap", nargs=3, metavar=("BASELINE", "CANDIDATE", "REFERENCE"),
                        default=None, help="the share of the gap between BASELINE and "
                        "REFERENCE that CANDIDATE closes, on the slices all three score")
    parser.add_argument("--n-boot", type=int, default=2000)
    parser.add_argument("--list", action="store_true", help="list the configurations")
    args = parser.parse_args(argv)

    for name, value in (("--threads", args.threads), ("--n-boot", args.n_boot)):
        if value is not None and value < 1:
            _fail(f"{name} must be an integer >= 1, got {value}")
    if args.list:
        for name, method in REGISTRY.items():
            print(f"{name:<18} {method.description}")
        print("<entry>+lv         the entry's units labelled under the LV anatomy rule "
              "(deepgmm.anatomy); +lv-dice: the wall for the largest expected Dice "
              "(deepgmm.decision); +fuse, +fuse+lv, +fuse+lv-dice: fused first")
        return
    if args.compare:
        a, b = _named_summaries(args, args.compare, "--compare")
        print(compare_table(a, b))
        if args.markdown:
            write_markdown(args.markdown, compare_table(a, b, markdown=True))
        return
    if args.gap:
        chosen = _named_summaries(args, args.gap, "--gap")
        print(gap_table(*chosen))
        if args.markdown:
            write_markdown(args.markdown, gap_table(*chosen, markdown=True))
        return
    if args.report:
        if not args.cache.is_dir():
            _fail(f"--cache {str(args.cache)!r} is not a folder")
        configs = args.configs or list(REGISTRY)
        summaries = summaries_from_cache(args.cache, configs, args.mu_seed, args.root,
                                         args.seeds)
        if not summaries:
            _fail(f"nothing cached in {str(args.cache)!r} for {', '.join(configs)}")
        print(report_tables(summaries, n_boot=args.n_boot))
        if args.markdown:
            write_markdown(args.markdown,
                           report_tables(summaries, markdown=True, n_boot=args.n_boot))
        return
    if not (args.root / "train25").is_dir():
        _fail(f"--root {str(args.root)!r} holds no MyoPS 2020 data (expected train25/)")
    args.configs = list(dict.fromkeys(split_config(c)[0]
                                      for c in (args.configs or list(REGISTRY))))
    run_study(args)


if __name__ == "__main__":
    main()
