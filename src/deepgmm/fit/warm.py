"""Warm start of per-slice fitting from a trained run (``deepgmm fit --init RUN``).

Every slice starts from the trained network's weights (its own copy, fresh AdamW state)
instead of a random initialisation, and is then fitted per slice as usual
(:func:`deepgmm.fit.single.fit_slices` with ``init_state``), with the fit's own λ, stopping
rule and iteration limits. The run must have been trained on slices prepared exactly as
these: the same sequences in the same order, the same crop size and normalisation, and
no context channels (per-slice networks see the image alone); its network settings
(depth, base filters, K) become the fit's.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from deepgmm.data.mu_data import check_prepared_like
from deepgmm.errors import CheckpointError, InputError
from deepgmm.fit.checkpoint import load_checkpoint
from deepgmm.types import SliceBatch

__all__ = ["WarmStart", "load_warm_start"]


@dataclass(frozen=True)
class WarmStart:
    """The starting weights of every slice and the network they belong to.

    Attributes:
        state: name -> tensor, the trained U-Net's parameters (CPU, float32).
        network: the U-Net's constructor arguments (``depth``, ``base_filters``, ...).
        run_dir: where they came from.
    """

    state: dict[str, torch.Tensor]
    network: dict[str, Any]
    run_dir: str


def load_warm_start(run_dir: str | os.PathLike[str], batch: SliceBatch,
                    net_options: Mapping[str, Any] | None = None) -> WarmStart:
    """Load a ``train`` run to start per-slice fits from, refusing a run that does not fit.

    Args:
        run_dir: the run folder (``deepgmm train --out``).
        batch: the slices to be fitted (``image (B, M, H, W)``, their sequences, crop size
            and normalisation).
        net_options: network options asked for (``depth``, ``base_filters``,
            ``n_classes``); each must equal the run's.

    Raises:
        CheckpointError: a missing or corrupt run, other sequences (names or order), another
            crop size or normalisation, context channels, other network options.
    """
    source = f"--init run {str(run_dir)!r}"
    ckpt = load_checkpoint(run_dir, sequences=batch.sequences, device="cpu")
    config = ckpt.config
    try:
        check_prepared_like(config["crop_size"], config["normalisation"], batch,
                            f"{source} was trained on")
    except InputError as err:  # a run that does not fit the data
        raise CheckpointError(str(err)) from err
    context = str(config.get("context", "none"))
    if context != "none":
        raise CheckpointError(f"{source} was trained with context {context!r} channels; "
                              "per-slice fits see the image alone")
    network = dict(config["network"])
    wrong = [f"{name} {network.get(name)} (asked for {value})"
             for name, value in (net_options or {}).items()
             if name in network and network[name] != value]
    if wrong:
        raise CheckpointError(f"{source} has another network: " + ", ".join(wrong))
    state = {name: t.detach().to(torch.float32) for name, t in ckpt.model_state.items()}
    return WarmStart(state=state, network=network, run_dir=str(run_dir))
