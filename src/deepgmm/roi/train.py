"""Supervised training of the ROI network on labelled cases.

Every slice of every training case is used (slices without LV teach the network to leave
them empty). Slices go onto the network grid (:mod:`deepgmm.roi.geometry`); the target is
the case's ROI (the LV: blood pool, myocardium, edema and scar). Each step draws
``batch_size`` slices, augments them on the fly -- the flips, rotations, scaling, elastic
deformation and noise of :func:`deepgmm.data.augment.augment_batch` (batched for the whole
step, where MONAI's random transforms draw one sample at a time), plus a random gain and
offset per slice and sequence -- and minimises MONAI's ``DiceCELoss`` (soft Dice over the
batch + cross-entropy) with AdamW and a cosine learning-rate schedule.

Everything random comes from ``settings.seed``: the initial weights (``torch.manual_seed``),
the order of the slices and the augmentation (one :class:`torch.Generator`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepgmm.errors import InputError
from deepgmm.roi.geometry import image_to_network, mask_to_network, slice_grid
from deepgmm.roi.model import (
    NORMALISATION,
    RoiModel,
    RoiSettings,
    build_network,
    check_settings,
    network_config,
    save_roi_run,
)
from deepgmm.types import CaseVolume

PathLike = str | os.PathLike[str]

GAIN_RANGE = 0.15
"""Intensity augmentation: each slice and sequence is scaled by 1 +- this and shifted by +-
this (in z-score units)."""


def network_inputs(volumes: Sequence[CaseVolume], settings: RoiSettings,
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """All slices of ``volumes`` on the network grid.

    Returns:
        ``image (N, M, C, C)`` float32 and ``target (N, C, C)`` bool (the ROI), N = total
        slices.
    """
    images, targets = [], []
    for vol in volumes:
        grid = slice_grid(vol.shape, vol.zooms, spacing_mm=settings.spacing_mm,
                          crop=settings.crop)
        images.append(image_to_network(vol.image, grid))
        targets.append(mask_to_network(vol.roi, grid))
    return torch.cat(images), torch.cat(targets)


def _check_volumes(volumes: Sequence[CaseVolume]) -> tuple[str, ...]:
    if not volumes:
        raise InputError("no training cases given: the ROI network needs labelled cases")
    sequences = tuple(volumes[0].sequences)
    for vol in volumes:
        if tuple(vol.sequences) != sequences:
            raise InputError(f"case {vol.case_id} has sequences {', '.join(vol.sequences)}, "
                             f"case {volumes[0].case_id} has {', '.join(sequences)}: all "
                             f"training cases need the same sequences in the same order")
        if vol.labels is None:
            raise InputError(f"case {vol.case_id} has no ground truth: the ROI network is "
                             f"trained on labelled cases only")
    return sequences


def _intensity_jitter(image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``(B, M, H, W)`` -> same, each slice and sequence scaled and shifted at random."""
    b, m = image.shape[:2]
    draws = torch.rand((2, b, m, 1, 1), generator=generator) * 2.0 - 1.0
    return image * (1.0 + GAIN_RANGE * draws[0]) + GAIN_RANGE * draws[1]


def _versions() -> dict[str, str]:
    import monai

    from deepgmm import __version__

    return {"deepgmm": __version__, "torch": torch.__version__, "monai": monai.__version__,
            "python": platform.python_version()}


def train_roi(volumes: Sequence[CaseVolume], run_dir: PathLike, *,
              settings: RoiSettings | None = None, progress: bool = True) -> RoiModel:
    """Train the ROI network on labelled cases and write the run folder.

    Args:
        volumes: labelled cases, all with the same sequences (their ROI is the target).
        run_dir: the run folder; ``model.safetensors`` and ``config.json`` are written
            every ``settings.checkpoint_every`` epochs and after the last one.
        settings: :class:`RoiSettings` (defaults when ``None``).
        progress: show a progress bar (one tick per epoch, the mean loss beside it).

    Returns:
        The trained :class:`RoiModel` (its config as written).

    Raises:
        InputError: no cases, cases without labels or with other sequences, settings out of
            range.
    """
    from monai.losses import DiceCELoss
    from tqdm.auto import tqdm

    from deepgmm.data.augment import augment_batch

    settings = settings or RoiSettings()
    check_settings(settings)
    sequences = _check_volumes(volumes)
    image, target = network_inputs(volumes, settings)
    n = int(image.shape[0])
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    net_config = network_config(len(sequences), settings)
    network = build_network(net_config)
    steps_per_epoch = max(1, math.ceil(n / settings.batch_size))
    total_steps = steps_per_epoch * settings.epochs
    optimiser = torch.optim.AdamW(network.parameters(), lr=settings.lr,
                                  weight_decay=settings.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps)
                                                      / total_steps)))
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)
    base_config: dict[str, Any] = {
        "network": net_config, "sequences": list(sequences),
        "spacing_mm": settings.spacing_mm, "crop": settings.crop,
        "normalisation": NORMALISATION, "threshold": settings.threshold,
        "min_area_mm2": settings.min_area_mm2, "opening_mm": settings.opening_mm,
        "train_patients": [v.case_id for v in volumes], "n_train_slices": n,
        "settings": {**dataclasses.asdict(settings), "channels": list(settings.channels)},
        "versions": _versions(),
    }
    history: list[float] = []
    run = Path(run_dir)
    start = time.perf_counter()
    bar = tqdm(total=settings.epochs, desc="train roi", unit="epoch", disable=not progress)
    network.train()
    for epoch in range(1, settings.epochs + 1):
        order = torch.randperm(n, generator=generator)
        losses = []
        for start in range(0, n, settings.batch_size):
            idx = order[start:start + settings.batch_size]
            x, y = image[idx], target[idx]
            if settings.augment:
                x, y, _ = augment_batch(x, y, generator=generator)
                x = _intensity_jitter(x, generator)
            optimiser.zero_grad(set_to_none=True)
            loss = loss_fn(network(x), y[:, None].long())
            loss.backward()
            optimiser.step()
            schedule.step()
            losses.append(float(loss.detach()))
        history.append(float(np.mean(losses)))
        if not math.isfinite(history[-1]):
            bar.close()
            from deepgmm.errors import FitError

            raise FitError(f"ROI training diverged at epoch {epoch} (loss {history[-1]}); "
                           f"lower --lr")
        bar.set_postfix(loss=f"{history[-1]:.4f}")
        bar.update(1)
        if epoch % settings.checkpoint_every == 0 or epoch == settings.epochs:
            config = {**base_config, "epoch": epoch, "epochs": settings.epochs,
                      "history": history, "train_seconds": time.perf_counter() - start}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # safetensors' storage notes
                save_roi_run(run, network, config)
    bar.close()
    network.eval()
    from deepgmm.roi.model import read_roi_config

    return RoiModel(network=network, config=read_roi_config(run), run_dir=run)
