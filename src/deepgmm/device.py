"""Choosing the compute device from a user's ``auto|cpu|cuda`` option."""

from __future__ import annotations

import torch

from deepgmm.errors import InputError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto"`` (CUDA when present, else CPU), ``"cpu"`` or ``"cuda[:i]"`` into a device.

    Raises:
        InputError: for an unknown name, or ``cuda`` on a machine without a CUDA device.
    """
    if isinstance(device, torch.device):
        return device
    name = str(device).lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(f"device {device!r} was asked for, but no CUDA device is "
                             "available; use device 'cpu' or 'auto'", params=("device",))
        return torch.device(name)
    raise InputError(f"device must be one of {', '.join(DEVICE_CHOICES)} or cuda:<index>, "
                     f"got {device!r}", params=("device",))
