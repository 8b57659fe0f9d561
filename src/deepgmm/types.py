"""Data containers shared by every stage: the contracts between modules.

Shapes: B slices, M sequences, K classes, H x W crop, X x Y x Z volume (slices along Z).
Class indices in label maps: 0 background, 1 blood, 2 myocardium, 3 edema, 4 scar.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

CLASS_NAMES: tuple[str, ...] = ("blood", "myocardium", "edema", "scar")
"""Names of the K = 4 foreground classes, index k (0-based) is label k + 1."""

MYOPS_CODES: dict[int, int] = {0: 0, 500: 1, 200: 2, 1220: 3, 2221: 4, 600: 0}
"""MyoPS ground-truth code -> class index (the right ventricle, 600, is background)."""

CLASS_TO_MYOPS: tuple[int, ...] = (0, 500, 200, 1220, 2221)
"""Class index -> MyoPS code, for writing label maps."""


@dataclass
class CaseVolume:
    """One case: co-registered sequences on one grid.

    Attributes:
        case_id: patient id as used on the command line, e.g. ``"101"``.
        sequences: names of the M sequences, in channel order, e.g. ``("C0", "DE", "T2")``.
        image: ``(M, X, Y, Z)`` float32 intensities as read from the files.
        roi: ``(X, Y, Z)`` bool region of interest (the left ventricle).
        labels: ``(X, Y, Z)`` int64 class indices 0..4, or ``None`` without ground truth.
        affine: ``(4, 4)`` voxel-to-world matrix of the input files.
        zooms: voxel spacing in mm, ``(dx, dy, dz)``.
        source: path of the first sequence file, for messages.
        files: the path of each sequence's file, in channel order, for messages (empty
            for volumes built in memory).
    """

    case_id: str
    sequences: tuple[str, ...]
    image: np.ndarray
    roi: np.ndarray
    labels: np.ndarray | None
    affine: np.ndarray
    zooms: tuple[float, float, float]
    source: str = ""
    files: tuple[str, ...] = ()

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(X, Y, Z)`` grid shape."""
        return tuple(self.roi.shape)  # type: ignore[return-value]


@dataclass
class SliceBatch:
    """A batch of cropped, normalised 2-D slices.

    Attributes:
        image: ``(B, M, H, W)`` float32, normalised per slice and sequence.
        roi: ``(B, H, W)`` bool.
        labels: ``(B, H, W)`` int64 class indices 0..4, or ``None``.
        case_ids: length-B list of case ids.
        slice_indices: length-B list, index of each slice along Z in its case.
        crop_origins: ``(B, 2)`` int64, the (x, y) voxel of the crop's corner [0, 0] in the
            full slice; may be negative where the crop was padded.
        full_shapes: ``(B, 2)`` int64, the (X, Y) in-plane shape of each slice's volume.
        sequences: names of the M sequences.
        spacing: ``(B, 2)`` float64 in-plane voxel spacing in mm.
        normalisation: how the images were z-scored, ``"crop"`` or ``"roi"``
            (:func:`deepgmm.data.slices.make_batch`); None when not known (a batch built
            by hand).

    The crop size ``(H, W)`` is :attr:`crop_size`, read off the images.
    """

    image: torch.Tensor
    roi: torch.Tensor
    labels: torch.Tensor | None
    case_ids: list[str]
    slice_indices: list[int]
    crop_origins: np.ndarray
    full_shapes: np.ndarray
    sequences: tuple[str, ...]
    spacing: np.ndarray = field(default_factory=lambda: np.ones((0, 2)))
    normalisation: str | None = None

    def __len__(self) -> int:
        return int(self.image.shape[0])

    @property
    def crop_size(self) -> tuple[int, int]:
        """``(H, W)`` of the slices."""
        return int(self.image.shape[-2]), int(self.image.shape[-1])


@dataclass
class SegmentationResult:
    """What every method returns for a batch of slices.

    Attributes:
        responsibilities: ``(B, K, H, W)`` float32 class probabilities (zero outside the ROI
            is not required; consumers mask with the ROI).
        nll: ``(B,)`` final negative log-likelihood per slice (NLL_V for spatially variant
            models), mean over ROI pixels.
        n_iter: ``(B,)`` iterations used per slice.
        seconds: ``(B,)`` wall time per slice (batch time shared equally when fitted at once).
        means: ``(B, K, M)`` fitted class means.
        method: name of the method, e.g. ``"deepsvg"``.
    """

    responsibilities: torch.Tensor
    nll: torch.Tensor
    n_iter: torch.Tensor
    seconds: torch.Tensor
    means: torch.Tensor
    method: str
