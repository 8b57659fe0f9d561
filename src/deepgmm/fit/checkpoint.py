"""Checkpoints of a trained network: ``RUN/model.safetensors`` + ``RUN/config.json``.

A run folder holds

- ``model.safetensors``: the network's weights;
- ``optimizer.safetensors``: the optimiser's state (tensors; hyperparameters in metadata),
  so that training can resume where it stopped;
- ``config.json``: the run's settings (a :class:`RunConfig`: everything needed to use the
  weights on new data, network configuration, K, class names, sequence names and order,
  normalisation, crop size, mu_data, training patients, model type, lambda, and the
  training settings), its progress (epoch, training history, whether it converged) and the
  SHA-256 of both tensor files.

:class:`RunConfig` is the one description of a run's settings: which keys every
``config.json`` must hold (:data:`REQUIRED_KEYS`) and which must be equal for a run to be
resumed (:data:`RESUME_KEYS`) come from its field metadata. A setting added after
checkpoints were first written declares the value such older checkpoints used
(``old=``), so they still load and resume.

Writing is journalled so that a checkpoint written halfway is never the current one: the
three files are first written completely into ``RUN/.checkpoint.staging/`` (``config.json``
last, which marks the set complete), then moved over the current files. A crash before the
set is complete leaves the previous checkpoint untouched (the staging folder is discarded
the next time the run is opened); a crash while moving leaves a complete staging folder that
is moved into place the next time the run is opened. Loading also checks both hashes, so a
truncated or edited tensor file is refused with :class:`~deepgmm.errors.CheckpointError`.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from deepgmm.errors import CheckpointError
from deepgmm.hashing import sha256_file as _sha256

FORMAT_VERSION = 1
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
CONFIG_FILE = "config.json"
STAGING_DIR = ".checkpoint.staging"

_NO_OLD = object()


def _setting(*, required: bool = False, resume: bool = False, old: Any = _NO_OLD) -> Any:
    """A :class:`RunConfig` field: ``required`` in every ``config.json``; ``resume``: must
    be equal to resume a run; ``old``: the value checkpoints written before the setting
    existed used (compared on resume)."""
    return field(metadata={"required": required, "resume": resume, "old": old})


@dataclass(frozen=True)
class RunConfig:
    """The settings of a ``train`` run, as stored in ``config.json`` (JSON values).

    Attributes:
        model: ``"deepg"`` or ``"deepsvg"``.
        lam: weight of the μ_data penalty.
        epochs, min_epochs, batch_size, lr, weight_decay, tol, seed, penalty, clip_norm,
            label_weight, precision, context, potts_weight, consistency_weight: the training
            settings
            (:func:`deepgmm.fit.train.train_network`).
        labelled_slices: ``[case id, slice index]`` of the slices whose labels enter the
            loss (``label_weight > 0``).
        augment: the augmentation settings, or None.
        network: the U-Net's constructor arguments.
        n_classes: K.
        class_names: K names.
        sequences: the M sequence names, in channel order.
        normalisation: how the training slices were z-scored (None: not known).
        crop_size: ``[H, W]`` of the training slices.
        mu_data: ``(K, M)`` class means as nested lists, or None.
        train_patients: the training case ids.
        n_slices: number of training slices.
        train_slices: ``[case id, slice index]`` of every training slice.
        package_version, torch_version, device: where the run was made.
        prior: ``"means"`` (published) or ``"all"`` (:mod:`deepgmm.mixture.prior`).
        lam_var, lam_weights: weights of the log-variance and weight penalties (unused
            with ``prior="means"``).
        class_prior: the class statistics of ``prior="all"``
            (:class:`~deepgmm.data.class_prior.ClassPrior` ``to_dict``), or None.
        components_per_class: Gaussian components per class; the network has
            ``n_classes * components_per_class`` outputs.
        class_gaussians: the labelled slices' class Gaussians that ``predict`` fuses with
            the network's probabilities (:class:`~deepgmm.mixture.fusion.ClassGaussians`
            ``to_dict``), or None (no ground truth in training).
    """

    model: str = _setting(required=True, resume=True)
    lam: float = _setting(required=True, resume=True)
    epochs: int = _setting(resume=True)
    min_epochs: int = _setting(resume=True)
    batch_size: int = _setting(resume=True)
    lr: float = _setting(resume=True)
    weight_decay: float = _setting(resume=True)
    tol: float = _setting(resume=True)
    seed: int = _setting(resume=True)
    penalty: str = _setting(resume=True)
    clip_norm: float | None = _setting(resume=True)
    label_weight: float = _setting(resume=True, old=0.0)
    context: str = _setting(resume=True, old="none")
    potts_weight: float = _setting(resume=True, old=0.0)
    consistency_weight: float = _setting(resume=True, old=0.0)
    precision: str = _setting(resume=True, old="fp32")
    labelled_slices: list[list[Any]] = _setting(resume=True, old=[])
    augment: dict[str, Any] | None = _setting(resume=True)
    network: dict[str, Any] = _setting(required=True, resume=True)
    n_classes: int = _setting(required=True)
    class_names: list[str] = _setting(required=True)
    sequences: list[str] = _setting(required=True, resume=True)
    normalisation: str | None = _setting(required=True)
    crop_size: list[int] = _setting(required=True, resume=True)
    mu_data: list[list[float]] | None = _setting(required=True, resume=True)
    train_patients: list[str] = _setting(required=True, resume=True)
    n_slices: int = _setting(resume=True)
    train_slices: list[list[Any]] = _setting()
    package_version: str = _setting()
    torch_version: str = _setting()
    device: str = _setting()
    prior: str = _setting(resume=True, old="means")
    lam_var: float = _setting(resume=True, old=1.0)
    lam_weights: float = _setting(resume=True, old=1.0)
    class_prior: dict[str, Any] | None = _setting(resume=True, old=None)
    components_per_class: int = _setting(resume=True, old=1)
    class_gaussians: dict[str, Any] | None = _setting(old=None)

    def to_json(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict (field order)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def resume_differences(self, stored: Mapping[str, Any]) -> list[str]:
        """``"key: checkpoint X, now Y"`` for every resume setting that differs from a
        stored ``config.json`` (a key it lacks counts as its ``old`` value)."""
        diffs = []
        for f in fields(self):
            if not f.metadata["resume"]:
                continue
            old = f.metadata["old"]
            before = stored.get(f.name, None if old is _NO_OLD else old)
            now = getattr(self, f.name)
            if _as_json(before) != _as_json(now):
                diffs.append(f"{f.name}: checkpoint {before!r}, now {now!r}")
        return diffs


def _as_json(value: Any) -> Any:
    """JSON round trip, so that tuples and lists compare equal."""
    return json.loads(json.dumps(value))


PROGRESS_KEYS: tuple[str, ...] = ("epoch", "converged", "finished", "history", "seconds")
"""Keys of ``config.json`` that record how far a run got (``epoch`` is required)."""

REQUIRED_KEYS: tuple[str, ...] = (
    "format_version", *(f.name for f in fields(RunConfig) if f.metadata["required"]),
    "epoch", "files")
"""Keys every ``config.json`` must have: the file format's and the required settings."""

RESUME_KEYS: tuple[str, ...] = tuple(f.name for f in fields(RunConfig) if f.metadata["resume"])
"""Settings that must be equal for a run to be resumed."""


def check_resumable(stored: Mapping[str, Any], current: RunConfig,
                    run_dir: str | os.PathLike[str]) -> None:
    """Raise :class:`CheckpointError` unless a run stored with ``stored`` (a ``config.json``)
    can be resumed with the settings ``current``."""
    diffs = current.resume_differences(stored)
    if diffs:
        raise CheckpointError(f"cannot resume {str(run_dir)!r} with other settings or data: "
                              + "; ".join(diffs))


@dataclass
class Checkpoint:
    """A loaded checkpoint.

    Attributes:
        config: the parsed ``config.json``.
        model_state: the network's ``state_dict`` (CPU tensors unless mapped elsewhere).
        optimizer_state: the optimiser's ``state_dict``, or ``None`` when not asked for.
        run_dir: the folder it came from.
    """

    config: dict[str, Any]
    model_state: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any] | None
    run_dir: Path


def _fsync(path: Path) -> None:
    with path.open("rb") as fh:
        os.fsync(fh.fileno())


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Optimizer ``state_dict`` -> (tensors ``state.<param>.<name>``, metadata strings)."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param_id, entries in state["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{param_id}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(param_id), {})[name] = value
    metadata = {"param_groups": json.dumps(state["param_groups"]),
                "scalars": json.dumps(scalars)}
    return tensors, metadata


def _unflatten_optimizer(tensors: dict[str, torch.Tensor],
                         metadata: dict[str, str]) -> dict[str, Any]:
    """Inverse of :func:`_flatten_optimizer`."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, param_id, name = key.split(".", 2)
        state.setdefault(int(param_id), {})[name] = value
    for param_id, entries in json.loads(metadata["scalars"]).items():
        state.setdefault(int(param_id), {}).update(entries)
    return {"state": state, "param_groups": json.loads(metadata["param_groups"])}


def recover_checkpoint(run_dir: str | os.PathLike[str]) -> None:
    """Finish or discard an interrupted checkpoint write (see the module docstring).

    Only the process that writes checkpoints calls this (saving and resuming); readers never
    modify a run folder, so a prediction may run beside a training run.
    """
    run_dir = Path(run_dir)
    staging = run_dir / STAGING_DIR
    if not staging.is_dir():
        return
    config_path = staging / CONFIG_FILE
    complete = False
    if config_path.is_file():
        try:
            files = json.loads(config_path.read_text())["files"]
            complete = all(
                (staging / name).is_file() and _sha256(staging / name) == digest
                or (not (staging / name).exists() and (run_dir / name).is_file()
                    and _sha256(run_dir / name) == digest)
                for name, digest in files.items())
        except (OSError, ValueError, KeyError, TypeError):
            complete = False
    if complete:
        # Tensor files first, config.json (the commit record) last.
        for name in (MODEL_FILE, OPTIMIZER_FILE, CONFIG_FILE):
            if (staging / name).exists():
                os.replace(staging / name, run_dir / name)
    shutil.rmtree(staging, ignore_errors=True)


def has_checkpoint(run_dir: str | os.PathLike[str]) -> bool:
    """Whether ``run_dir`` holds a (possibly interrupted) checkpoint."""
    run = Path(run_dir)
    return (run / CONFIG_FILE).is_file() or (run / STAGING_DIR / CONFIG_FILE).is_file()


def save_checkpoint(run_dir: str | os.PathLike[str], *, config: dict[str, Any],
                    model_state: dict[str, torch.Tensor],
                    optimizer_state: dict[str, Any] | None = None) -> Path:
    """Write weights, optimiser state and configuration as one journalled checkpoint.

    Args:
        run_dir: the run folder (created when missing).
        config: JSON-serialisable configuration; must hold :data:`REQUIRED_KEYS` except
            ``files`` and ``format_version``, which are filled in here.
        model_state: the network's ``state_dict``.
        optimizer_state: the optimiser's ``state_dict`` (for resuming), or ``None``.

    Returns:
        The path of the written ``config.json``.
    """
    from safetensors.torch import save_file

    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    staging = run / STAGING_DIR
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    model_tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model_state.items()}
    save_file(model_tensors, str(staging / MODEL_FILE),
              metadata={"format_version": str(FORMAT_VERSION)})
    files = {MODEL_FILE: _sha256(staging / MODEL_FILE)}
    _fsync(staging / MODEL_FILE)
    if optimizer_state is not None:
        opt_tensors, opt_meta = _flatten_optimizer(optimizer_state)
        save_file(opt_tensors, str(staging / OPTIMIZER_FILE), metadata=opt_meta)
        files[OPTIMIZER_FILE] = _sha256(staging / OPTIMIZER_FILE)
        _fsync(staging / OPTIMIZER_FILE)
    full = {**config, "format_version": FORMAT_VERSION, "files": files}
    tmp = staging / f".{CONFIG_FILE}.tmp"
    tmp.write_text(json.dumps(full, indent=2, sort_keys=True) + "\n")
    _fsync(tmp)
    os.replace(tmp, staging / CONFIG_FILE)  # the set is complete from here on
    recover_checkpoint(run)
    if optimizer_state is None:
        (run / OPTIMIZER_FILE).unlink(missing_ok=True)
    return run / CONFIG_FILE


def read_config(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse and check ``RUN/config.json``; reads only, never modifies the folder.

    Raises:
        CheckpointError: missing folder or file, not JSON, other format version, or
            missing keys.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise CheckpointError(f"run folder {str(run)!r} does not exist")
    path = run / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{str(run)!r} holds no checkpoint ({CONFIG_FILE} is missing); "
                              "pass the folder a `deepgmm train` run wrote")
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"checkpoint config {str(path)!r} is not valid JSON: {err}"
                              ) from err
    if not isinstance(config, dict):
        raise CheckpointError(f"checkpoint config {str(path)!r} must hold a JSON object")
    missing = [key for key in REQUIRED_KEYS if key not in config]
    if missing:
        raise CheckpointError(f"checkpoint config {str(path)!r} lacks the key(s) "
                              f"{', '.join(missing)}")
    if config["format_version"] != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {str(path)!r} has format version "
                              f"{config['format_version']}, this package reads "
                              f"{FORMAT_VERSION}")
    _check_config_values(config, path)
    return config


def _check_config_values(config: Mapping[str, Any], path: Path) -> None:
    """Refuse settings a prediction uses as they are (crop size, sequences, normalisation)
    unless they have the right form; the message names the file and the key."""
    crop = config.get("crop_size")
    if not (isinstance(crop, list) and len(crop) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in crop)):
        raise CheckpointError(f"checkpoint config {str(path)!r}: 'crop_size' must be [H, W] "
                              f"with two positive integers, got {crop!r}")
    seqs = config.get("sequences")
    if not (isinstance(seqs, list) and seqs and all(isinstance(v, str) for v in seqs)):
        raise CheckpointError(f"checkpoint config {str(path)!r}: 'sequences' must be a list "
                              f"of sequence names, got {seqs!r}")
    if config.get("normalisation") is not None and not isinstance(config["normalisation"],
                                                                   str):
        raise CheckpointError(f"checkpoint config {str(path)!r}: 'normalisation' must be a "
                              f"name, got {config['normalisation']!r}")


def _load_tensors(path: Path, digest: str | None,
                  device: str | torch.device) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    if not path.is_file():
        raise CheckpointError(f"checkpoint file {str(path)!r} is missing")
    if digest is not None and _sha256(path) != digest:
        raise CheckpointError(f"checkpoint file {str(path)!r} is corrupt or was written "
                              f"halfway (its SHA-256 does not match {CONFIG_FILE}); if "
                              "training stopped while saving, `deepgmm train --resume` "
                              "finishes the save")
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as fh:
            tensors = {key: fh.get_tensor(key) for key in fh.keys()}  # noqa: SIM118
            metadata = fh.metadata() or {}
    except Exception as err:  # safetensors raises its own error types
        raise CheckpointError(f"checkpoint file {str(path)!r} is not a readable "
                              f"safetensors file: {err}") from err
    return tensors, metadata


def check_compatible(config: dict[str, Any], *, sequences: Sequence[str] | None = None,
                     n_classes: int | None = None, source: str = "checkpoint") -> None:
    """Refuse data or settings that do not match a checkpoint.

    Args:
        config: a checkpoint's configuration.
        sequences: the data's sequence names in channel order, or ``None`` to skip.
        n_classes: the wanted number of classes K, or ``None`` to skip.
        source: how to name the checkpoint in messages.

    Raises:
        CheckpointError: other sequences (names or order) or another K.
    """
    if sequences is not None and list(sequences) != list(config["sequences"]):
        raise CheckpointError(
            f"{source} was trained on the sequences {', '.join(config['sequences'])} (in this "
            f"order); the data has {', '.join(sequences)}")
    if n_classes is not None and int(n_classes) != int(config["n_classes"]):
        raise CheckpointError(f"{source} has K = {config['n_classes']} classes, "
                              f"{n_classes} were asked for")


def load_checkpoint(run_dir: str | os.PathLike[str], *, sequences: Sequence[str] | None = None,
                    n_classes: int | None = None, with_optimizer: bool = False,
                    device: str | torch.device = "cpu") -> Checkpoint:
    """Load and validate a checkpoint.

    Args:
        run_dir: the run folder.
        sequences: when given, the data's sequence names in channel order; must match.
        n_classes: when given, the expected K; must match.
        with_optimizer: also load the optimiser state (for resuming).
        device: where to place the tensors.

    Raises:
        CheckpointError: missing or corrupt files, missing keys, tensors that do not fit
            the stored network configuration, other sequences, other K.
    """
    run = Path(run_dir)
    config = read_config(run)
    source = f"checkpoint {str(run)!r}"
    check_compatible(config, sequences=sequences, n_classes=n_classes, source=source)
    k = int(config["n_classes"])
    channels = k * int(config.get("components_per_class", 1))  # network outputs
    if len(config["class_names"]) != k or int(config["network"].get("n_classes", channels)) \
            != channels:
        raise CheckpointError(f"{source} is inconsistent: K = {k} but class_names / network "
                              "disagree")
    mu = config["mu_data"]
    if mu is not None and (len(mu) != k or any(len(row) != len(config["sequences"])
                                               for row in mu)):
        raise CheckpointError(f"{source} has mu_data of the wrong shape for K = {k} classes "
                              f"and {len(config['sequences'])} sequences")
    files = config["files"]
    model_state, _ = _load_tensors(run / MODEL_FILE, files.get(MODEL_FILE), device)
    optimizer_state = None
    if with_optimizer:
        if OPTIMIZER_FILE not in files:
            raise CheckpointError(f"{source} holds no optimiser state, so it cannot be "
                                  "resumed")
        tensors, metadata = _load_tensors(run / OPTIMIZER_FILE, files[OPTIMIZER_FILE], device)
        try:
            optimizer_state = _unflatten_optimizer(tensors, metadata)
        except (KeyError, ValueError) as err:
            raise CheckpointError(f"optimiser state in {source} is malformed: {err}") from err
    return Checkpoint(config=config, model_state=model_state,
                      optimizer_state=optimizer_state, run_dir=run)


def build_network(checkpoint: Checkpoint, device: str | torch.device = "cpu",
                  ) -> torch.nn.Module:
    """The U-Net described by ``config["network"]`` with the checkpoint's weights loaded.

    Raises:
        CheckpointError: the network configuration is not understood, or the weights have
            missing, unexpected or wrongly shaped tensors.
    """
    from deepgmm.nets.unet import UNet

    source = f"checkpoint {str(checkpoint.run_dir)!r}"
    try:
        net = UNet(**checkpoint.config["network"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{source} has a network configuration this package cannot "
                              f"build ({checkpoint.config['network']}): {err}") from err
    try:
        net.load_state_dict(checkpoint.model_state, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        detail = "; ".join(line.strip() for line in first[:4])
        raise CheckpointError(f"weights in {source} do not fit its network: {detail}"
                              ) from err
    return net.to(device)
