"""The ROI network and its run folder: ``ROI_RUN/model.safetensors`` + ``ROI_RUN/config.json``.

The network is MONAI's :class:`monai.networks.nets.UNet` in 2-D (strided convolutions, one
residual unit per level, instance normalisation): ``(B, M, C, C)`` normalised windows ->
``(B, 2, C, C)`` logits of background and left ventricle. Its default width (8 -> 128
channels over 5 levels, about 0.2 M weights) is small enough to train on a CPU.

A run folder holds the weights (safetensors) and ``config.json``: what the weights need to
be used on new data (network configuration, sequences and their order, the in-plane
spacing and window, the normalisation, post-processing thresholds), how they were made
(training patients, settings, seed, loss history, package and torch versions) and the
SHA-256 of the weights. Both files are written atomically, weights first; a config whose
hash does not match the weights (a crash between the two writes) is refused on loading.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import torch

from deepgmm._atomic import atomic_path
from deepgmm.errors import CheckpointError
from deepgmm.hashing import sha256_file as _sha256
from deepgmm.params import SEED, Interval, check_params

PathLike = str | os.PathLike[str]

ROI_KIND = "deepgmm-roi"
"""``config["kind"]`` of an ROI run (``deepgmm train`` runs have no such key)."""
FORMAT_VERSION = 1
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
NORMALISATION = "per slice and sequence: clip to the 1st-99th percentile, z-score (window)"
N_OUTPUTS = 2  # background, left ventricle


@dataclass(frozen=True)
class RoiSettings:
    """How an ROI network is built, fed and trained.

    Attributes:
        spacing_mm: in-plane pixel size every slice is resampled to.
        crop: side of the centred window the network sees, pixels (``crop * spacing_mm`` mm
            must hold the heart; divisible by ``2 ** (len(channels) - 1)``).
        channels: channels per U-Net level (MONAI ``UNet(channels=...)``), each level but the
            last halving the resolution.
        num_res_units: residual units per level.
        epochs: passes over the training slices.
        batch_size: slices per optimiser step.
        lr: AdamW learning rate (peak of a cosine schedule).
        weight_decay: AdamW weight decay.
        seed: seeds the weights, the order of the slices and the augmentation.
        augment: random flips, rotations, scaling, elastic deformation, noise and intensity
            changes during training.
        threshold: LV probability above which a voxel is in the ROI.
        min_area_mm2: a slice whose LV is smaller is left empty.
        opening_mm: radius of the disc each slice's mask is opened with, removing thin
            protrusions (:mod:`deepgmm.roi.postprocess`; 0: none).
        checkpoint_every: write a checkpoint every this many epochs (and after the last).
    """

    spacing_mm: float = 2.0
    crop: int = 128
    channels: tuple[int, ...] = (8, 16, 32, 64, 128)
    num_res_units: int = 1
    epochs: int = 40
    batch_size: int = 16
    lr: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0
    augment: bool = True
    threshold: float = 0.5
    min_area_mm2: float = 100.0
    opening_mm: float = 10.0
    checkpoint_every: int = 5


ROI_SETTINGS_CONSTRAINTS: dict[str, list[Any]] = {
    "spacing_mm": [Interval(Real, 0, None, closed="neither")],
    "crop": [Interval(Integral, 16, None, closed="left")],
    "channels": [tuple],
    "num_res_units": [Interval(Integral, 0, None, closed="left")],
    "epochs": [Interval(Integral, 1, None, closed="left")],
    "batch_size": [Interval(Integral, 1, None, closed="left")],
    "lr": [Interval(Real, 0, None, closed="neither")],
    "weight_decay": [Interval(Real, 0, None, closed="left")],
    "seed": [SEED],
    "augment": ["boolean"],
    "threshold": [Interval(Real, 0, 1, closed="neither")],
    "min_area_mm2": [Interval(Real, 0, None, closed="left")],
    "opening_mm": [Interval(Real, 0, None, closed="left")],
    "checkpoint_every": [Interval(Integral, 1, None, closed="left")],
}
"""Constraint table of :class:`RoiSettings` (:func:`deepgmm.params.check_params` format)."""


def check_settings(settings: RoiSettings) -> None:
    """Raise :class:`~deepgmm.errors.InputError` for a setting out of range.

    Besides the table: channels must be at least two positive integers and the window
    divisible by the network's total down-sampling.
    """
    from deepgmm.errors import InputError

    values = dataclasses.asdict(settings)
    values["channels"] = tuple(settings.channels)
    check_params(ROI_SETTINGS_CONSTRAINTS, values, caller="RoiSettings")
    channels = settings.channels
    if len(channels) < 2 or any(isinstance(c, bool) or not isinstance(c, int) or c < 1
                                for c in channels):
        raise InputError(f"RoiSettings: channels must be at least two positive integers, "
                         f"got {channels!r}")
    factor = 2 ** (len(channels) - 1)
    if settings.crop % factor:
        raise InputError(f"RoiSettings: crop {settings.crop} must be divisible by "
                         f"2 ** (levels - 1) = {factor} for channels {channels}")


def network_config(n_sequences: int, settings: RoiSettings) -> dict[str, Any]:
    """Keyword arguments of :class:`monai.networks.nets.UNet` for ``settings``."""
    channels = [int(c) for c in settings.channels]
    return {"spatial_dims": 2, "in_channels": int(n_sequences), "out_channels": N_OUTPUTS,
            "channels": channels, "strides": [2] * (len(channels) - 1),
            "num_res_units": int(settings.num_res_units), "norm": "instance"}


def build_network(config: Mapping[str, Any]) -> torch.nn.Module:
    """MONAI ``UNet(**config)``: ``(B, M, C, C)`` -> ``(B, 2, C, C)`` logits."""
    from monai.networks.nets import UNet

    return UNet(**dict(config))


@dataclass
class RoiModel:
    """A trained ROI network ready to predict.

    Attributes:
        network: the MONAI U-Net, in eval mode.
        config: the run's ``config.json``.
        run_dir: the folder it came from (``None`` for a model built in memory).
    """

    network: torch.nn.Module
    config: dict[str, Any]
    run_dir: Path | None = None

    @property
    def sequences(self) -> tuple[str, ...]:
        """The sequence names the network was trained on, in channel order."""
        return tuple(self.config["sequences"])

    def name(self) -> str:
        """How to name the run in messages."""
        return f"ROI run {str(self.run_dir)!r}" if self.run_dir else "the ROI model"


def save_roi_run(run_dir: PathLike, network: torch.nn.Module,
                 config: Mapping[str, Any]) -> Path:
    """Write the weights, then ``config.json`` (with their SHA-256), each atomically.

    Args:
        run_dir: the run folder (created when missing).
        network: the trained network.
        config: JSON-serialisable configuration (``kind``, ``format_version`` and ``files``
            are filled in here).

    Returns:
        The path of ``config.json``.
    """
    from safetensors.torch import save_file

    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous().clone()
               for k, v in network.state_dict().items()}
    with atomic_path(run / MODEL_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"kind": ROI_KIND})
    full = {**config, "kind": ROI_KIND, "format_version": FORMAT_VERSION,
            "files": {MODEL_FILE: _sha256(run / MODEL_FILE)}}
    with atomic_path(run / CONFIG_FILE) as tmp:
        tmp.write_text(json.dumps(full, indent=2, sort_keys=True) + "\n")
    return run / CONFIG_FILE


def read_roi_config(run_dir: PathLike) -> dict[str, Any]:
    """Parse and check ``ROI_RUN/config.json`` (reads only).

    Raises:
        CheckpointError: missing folder or file, not JSON, not an ROI run, another format
            version, or missing keys.
    """
    run = Path(run_dir)
    path = run / CONFIG_FILE
    if not run.is_dir():
        raise CheckpointError(f"ROI run folder {str(run)!r} does not exist")
    if not path.is_file():
        raise CheckpointError(f"{str(run)!r} holds no ROI run ({CONFIG_FILE} is missing); "
                              f"pass the --out folder of a `deepgmm roi train` run")
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"ROI run config {str(path)!r} is not valid JSON: {err}"
                              ) from err
    if not isinstance(config, dict) or config.get("kind") != ROI_KIND:
        raise CheckpointError(f"{str(run)!r} is not an ROI run (its {CONFIG_FILE} is not from "
                              f"`deepgmm roi train`)")
    if config.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"ROI run {str(run)!r} has format version "
                              f"{config.get('format_version')}, this package reads "
                              f"{FORMAT_VERSION}")
    required = ("network", "sequences", "spacing_mm", "crop", "threshold", "min_area_mm2",
                "files")
    missing = [key for key in required if key not in config]
    if missing:
        raise CheckpointError(f"ROI run config {str(path)!r} lacks the key(s) "
                              f"{', '.join(missing)}")
    return config


def check_sequences(config: Mapping[str, Any], sequences: Sequence[str], *, run: str,
                    data: str) -> None:
    """Refuse data whose sequences are not those the ROI run was trained on.

    Raises:
        CheckpointError: naming the run's sequences and the data's.
    """
    if list(sequences) != list(config["sequences"]):
        raise CheckpointError(
            f"{run} was trained on the sequences {', '.join(config['sequences'])} (in this "
            f"order); {data} has {', '.join(sequences) or 'none of them'}")


def load_roi_run(run_dir: PathLike, *, device: str | torch.device = "cpu") -> RoiModel:
    """Load an ROI run for prediction.

    Raises:
        CheckpointError: as :func:`read_roi_config`; weights missing, corrupt, not matching
            the hash in the config or not fitting the network.
    """
    from safetensors.torch import load_file

    run = Path(run_dir)
    config = read_roi_config(run)
    weights = run / MODEL_FILE
    if not weights.is_file():
        raise CheckpointError(f"ROI run weights {str(weights)!r} are missing")
    if _sha256(weights) != config["files"].get(MODEL_FILE):
        raise CheckpointError(f"ROI run weights {str(weights)!r} do not match the SHA-256 in "
                              f"{CONFIG_FILE} (written halfway or edited); train again")
    try:
        state = load_file(str(weights), device=str(device))
        network = build_network(config["network"])
        network.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, ValueError, OSError) as err:
        detail = "; ".join(str(err).strip().splitlines()[:3])
        raise CheckpointError(f"ROI run {str(run)!r} cannot be loaded: {detail}") from err
    return RoiModel(network=network.to(device).eval(), config=config, run_dir=run)
