"""From volumes to a batch of 2-D slices: pick slices, crop around the ROI, normalise.

Shapes: a volume is ``(M, X, Y, Z)`` (slices along Z); a batch is ``(B, M, H, W)`` where
``(H, W)`` is the crop size. The crop of a case is centred on the centre of mass of the ROI
in the case's middle ROI slice (the middle one of the slices whose ROI is not empty), the
same crop for every slice of the case; where that crop would cut off part of the ROI of a
selected slice (an ROI that differs much between slices), it is centred on the middle of the
bounding box of the selected slices' ROI instead. Where the crop leaves the image it is
zero-padded.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from deepgmm.errors import InputError
from deepgmm.types import CaseVolume, SliceBatch

SELECTION_MODES: tuple[str, ...] = ("all-classes", "roi")
NORMALISATIONS: tuple[str, ...] = ("crop", "roi")
N_LABELS = 5  # background + K = 4 classes

MAX_PAD_FACTOR = 2
"""A crop side may be at most this many times the image side (the rest is padding)."""

_MIN_STD = 1e-6


def select_slices(volume: CaseVolume, mode: str = "all-classes") -> list[int]:
    """Indices along Z of the slices to segment.

    Args:
        volume: the case.
        mode: ``"all-classes"``: slices where background and all four classes occur in the
            ground truth (the paper's selection; needs labels); ``"roi"``: slices whose ROI is
            not empty.

    Returns:
        Sorted slice indices (possibly empty).

    Raises:
        InputError: unknown mode, or ``"all-classes"`` on a case without labels.
    """
    if mode not in SELECTION_MODES:
        raise InputError(f"slice selection must be one of {', '.join(SELECTION_MODES)}, "
                         f"got {mode!r}")
    if mode == "roi":
        return [int(z) for z in np.flatnonzero(volume.roi.any(axis=(0, 1)))]
    if volume.labels is None:
        raise InputError(f"case {volume.case_id} has no ground truth, so 'all-classes' slices "
                         f"cannot be chosen; use the 'roi' selection")
    labels = np.clip(volume.labels, 0, N_LABELS)  # values > 4 (invalid) land in bin 5
    n_z = labels.shape[2]
    # (Z, N_LABELS + 1) voxel counts per slice and label, without a loop over labels.
    flat = (np.arange(n_z) * (N_LABELS + 1) + labels).ravel()
    counts = np.bincount(flat, minlength=n_z * (N_LABELS + 1)).reshape(n_z, N_LABELS + 1)
    return [int(z) for z in np.flatnonzero((counts[:, :N_LABELS] > 0).all(axis=1))]


def crop_center(volume: CaseVolume) -> tuple[int, int]:
    """The ``(x, y)`` voxel (rounded) at the ROI's centre of mass in the middle ROI slice.

    Raises:
        InputError: the ROI is empty in every slice.
    """
    roi_slices = np.flatnonzero(volume.roi.any(axis=(0, 1)))
    if roi_slices.size == 0:
        raise InputError(f"case {volume.case_id}: the region of interest is empty")
    middle = volume.roi[:, :, int(roi_slices[len(roi_slices) // 2])]
    xy = np.argwhere(middle).mean(axis=0)
    return int(np.floor(xy[0] + 0.5)), int(np.floor(xy[1] + 0.5))


def _check_crop_size(crop_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(crop_size, int | np.integer) and not isinstance(crop_size, bool):
        crop_size = (int(crop_size), int(crop_size))
    try:
        h, w = (int(s) for s in crop_size)
        ok = all(float(s) == int(s) for s in crop_size)
    except (TypeError, ValueError) as err:
        raise InputError(f"crop size must be two positive integers (H, W), got "
                         f"{crop_size!r}") from err
    if not ok or h <= 0 or w <= 0:
        raise InputError(f"crop size must be two positive integers (H, W), got {crop_size!r}")
    return h, w


def _overlap(origin: int, size: int, full: int) -> tuple[int, int, int, int]:
    """Source [a0, a1) in the full axis and destination [b0, b1) in the crop axis."""
    a0, a1 = max(origin, 0), min(origin + size, full)
    if a1 <= a0:
        return 0, 0, 0, 0
    return a0, a1, a0 - origin, a1 - origin


def crop(array: np.ndarray, crop_origin: Sequence[int], crop_size: Sequence[int],
         fill: float = 0) -> np.ndarray:
    """Cut a ``(..., H, W)`` window out of a ``(..., X, Y)`` array, padding with ``fill``.

    Args:
        array: ``(..., X, Y)``.
        crop_origin: ``(x, y)`` of the window's corner ``[0, 0]``; may be negative.
        crop_size: ``(H, W)``.
        fill: value where the window leaves the array.

    Returns:
        ``(..., H, W)``, same dtype as ``array``.
    """
    h, w = _check_crop_size(crop_size)
    ox, oy = (int(o) for o in crop_origin)
    x_full, y_full = array.shape[-2:]
    out = np.full((*array.shape[:-2], h, w), fill, dtype=array.dtype)
    ax0, ax1, bx0, bx1 = _overlap(ox, h, x_full)
    ay0, ay1, by0, by1 = _overlap(oy, w, y_full)
    out[..., bx0:bx1, by0:by1] = array[..., ax0:ax1, ay0:ay1]
    return out


def uncrop(maps: np.ndarray, crop_origin: Sequence[int], full_shape: Sequence[int],
           fill: float = 0) -> np.ndarray:
    """Put a ``(..., H, W)`` crop back into a ``(..., X, Y)`` array filled with ``fill``.

    The exact inverse of :func:`crop` on the part of the crop that lies inside the image
    (padding is dropped).

    Args:
        maps: ``(..., H, W)``, e.g. a label map or ``(K, H, W)`` probabilities.
        crop_origin: ``(x, y)`` of the crop's corner in the full slice (``SliceBatch``'s
            ``crop_origins[b]``).
        full_shape: ``(X, Y)`` (``SliceBatch``'s ``full_shapes[b]``).
        fill: value outside the crop.

    Returns:
        ``(..., X, Y)``, same dtype as ``maps``.
    """
    maps = np.asarray(maps)
    x_full, y_full = (int(s) for s in full_shape)
    if x_full <= 0 or y_full <= 0:
        raise InputError(f"full shape must be positive, got {tuple(full_shape)}")
    h, w = maps.shape[-2:]
    ox, oy = (int(o) for o in crop_origin)
    out = np.full((*maps.shape[:-2], x_full, y_full), fill, dtype=maps.dtype)
    ax0, ax1, bx0, bx1 = _overlap(ox, h, x_full)
    ay0, ay1, by0, by1 = _overlap(oy, w, y_full)
    out[..., ax0:ax1, ay0:ay1] = maps[..., bx0:bx1, by0:by1]
    return out


def _normalise(image: np.ndarray, region: np.ndarray,
               where: Callable[[int, int], str]) -> np.ndarray:
    """Z-score ``(S, M, H, W)`` per slice and sequence over ``region`` ``(S, H, W)``.

    Pixels outside ``region`` are normalised too (same mean and sd); the caller zeroes the
    padding.
    """
    weight = region[:, None].astype(np.float64)  # (S, 1, H, W)
    n = weight.sum(axis=(2, 3))  # (S, 1)
    mean = (image * weight).sum(axis=(2, 3)) / n  # (S, M)
    var = (((image - mean[..., None, None]) ** 2) * weight).sum(axis=(2, 3)) / n
    std = np.sqrt(var)
    scale = np.maximum(np.abs(mean), 1.0)
    bad = std <= _MIN_STD * scale
    if bad.any():
        s, m = np.argwhere(bad)[0]
        raise InputError(f"{where(int(s), int(m))}: the image is constant over the "
                         f"normalisation region, it cannot be z-scored")
    return ((image - mean[..., None, None]) / std[..., None, None]).astype(np.float32)


def _selection_for(volume: CaseVolume,
                   selection: str | Mapping[str, Sequence[int]]) -> list[int]:
    if isinstance(selection, str):
        return select_slices(volume, selection)
    if volume.case_id not in selection:
        return []
    n_z = volume.shape[2]
    chosen = sorted({int(z) for z in selection[volume.case_id]})
    bad = [z for z in chosen if not 0 <= z < n_z]
    if bad:
        raise InputError(f"case {volume.case_id}: slice index(es) {bad} out of range, the case "
                         f"has {n_z} slices (0..{n_z - 1})")
    return chosen


def make_batch(volumes: Sequence[CaseVolume], *,
               selection: str | Mapping[str, Sequence[int]] = "all-classes",
               crop_size: int | Sequence[int] = (160, 160), normalisation: str = "crop",
               require_labels: bool = False) -> SliceBatch:
    """Cut the selected slices of every case into one normalised batch.

    Args:
        volumes: cases with the same sequences.
        selection: ``"all-classes"`` or ``"roi"`` (see :func:`select_slices`), or a mapping
            case id -> slice indices (cases not in it contribute nothing).
        crop_size: ``(H, W)`` of the crop around the case's ROI centre (an int means a
            square); where it leaves the image the crop is zero-padded (at most
            ``MAX_PAD_FACTOR`` times the image side).
        normalisation: z-score each slice and sequence over the ``"crop"`` (the pixels of the
            crop inside the image) or over the ``"roi"``; padding is set to 0.
        require_labels: refuse cases without ground truth (for evaluation and ``mu_data``).

    Returns:
        A :class:`SliceBatch`: image ``(B, M, H, W)`` float32, roi ``(B, H, W)`` bool, labels
        ``(B, H, W)`` int64 (``None`` when a case has none), crop origins, full shapes and
        in-plane spacing ``(B, 2)``, and the ``normalisation`` used.

    Raises:
        InputError: no volumes or no slice selected, different sequences, bad crop size,
            an ROI that is empty in a selected slice or leaves the crop, a constant image,
            or missing labels when ``require_labels``.
    """
    if not volumes:
        raise InputError("no cases given: nothing to batch")
    h, w = _check_crop_size(crop_size)
    if normalisation not in NORMALISATIONS:
        raise InputError(f"normalisation must be one of {', '.join(NORMALISATIONS)}, got "
                         f"{normalisation!r}")
    sequences = tuple(volumes[0].sequences)
    have_labels = all(v.labels is not None for v in volumes)
    images, rois, labels = [], [], []
    case_ids: list[str] = []
    slice_idx: list[int] = []
    origins, shapes, spacing = [], [], []
    for vol in volumes:
        if tuple(vol.sequences) != sequences:
            raise InputError(f"case {vol.case_id} has sequences {vol.sequences}, but case "
                             f"{volumes[0].case_id} has {sequences}: all cases must have the "
                             f"same sequences in the same order")
        if require_labels and vol.labels is None:
            raise InputError(f"case {vol.case_id} has no ground truth, but labels are needed")
        x_full, y_full, _ = vol.shape
        if h > MAX_PAD_FACTOR * x_full or w > MAX_PAD_FACTOR * y_full:
            raise InputError(f"crop size {(h, w)} is more than {MAX_PAD_FACTOR} times the "
                             f"in-plane size {(x_full, y_full)} of case {vol.case_id}: choose "
                             f"a smaller crop")
        zs = _selection_for(vol, selection)
        if not zs:
            continue
        cx, cy = crop_center(vol)
        origin = (cx - h // 2, cy - w // 2)
        roi_z = vol.roi[:, :, zs].transpose(2, 0, 1)  # (S, X, Y)
        empty = np.flatnonzero(~roi_z.any(axis=(1, 2)))
        if empty.size:
            raise InputError(f"case {vol.case_id}, slice {zs[int(empty[0])]}: the region of "
                             f"interest is empty in a selected slice")
        roi_c = crop(roi_z, origin, (h, w), fill=False)
        lost = roi_z.sum(axis=(1, 2)) - roi_c.sum(axis=(1, 2))
        if lost.any():  # centre the crop on the ROI's bounding box instead
            xs, ys = np.nonzero(roi_z.any(axis=(0, 2))), np.nonzero(roi_z.any(axis=(0, 1)))
            cx = (int(xs[0][0]) + int(xs[0][-1]) + 1) // 2
            cy = (int(ys[0][0]) + int(ys[0][-1]) + 1) // 2
            origin = (cx - h // 2, cy - w // 2)
            roi_c = crop(roi_z, origin, (h, w), fill=False)
            lost = roi_z.sum(axis=(1, 2)) - roi_c.sum(axis=(1, 2))
        if lost.any():
            s = int(np.flatnonzero(lost)[0])
            raise InputError(f"case {vol.case_id}, slice {zs[s]}: {int(lost[s])} ROI voxel(s) "
                             f"lie outside the {h} x {w} crop; use a larger crop size")
        img_c = crop(vol.image[..., zs].transpose(3, 0, 1, 2), origin, (h, w))  # (S, M, H, W)
        inside = crop(np.ones((len(zs), x_full, y_full), dtype=bool), origin, (h, w),
                      fill=False)
        region = inside if normalisation == "crop" else roi_c

        def where(s: int, m: int, _vol: CaseVolume = vol, _zs: list[int] = zs) -> str:
            file = _vol.files[m] if len(_vol.files) == len(sequences) else _vol.source
            return f"case {_vol.case_id}, slice {_zs[s]}, sequence {sequences[m]} ({file})"

        img_n = _normalise(img_c, region, where) * inside[:, None]
        images.append(img_n)
        rois.append(roi_c)
        if have_labels:
            labels.append(crop(vol.labels[..., zs].transpose(2, 0, 1), origin, (h, w)))
        n = len(zs)
        case_ids += [vol.case_id] * n
        slice_idx += zs
        origins.append(np.tile(origin, (n, 1)))
        shapes.append(np.tile((x_full, y_full), (n, 1)))
        spacing.append(np.tile(vol.zooms[:2], (n, 1)))
    if not images:
        what = selection if isinstance(selection, str) else "the given slice indices"
        raise InputError(f"no slice selected ({what}) in {len(volumes)} case(s): the batch "
                         f"would be empty")
    return SliceBatch(
        image=torch.from_numpy(np.concatenate(images)),
        roi=torch.from_numpy(np.concatenate(rois)),
        labels=torch.from_numpy(np.concatenate(labels).astype(np.int64)) if have_labels
        else None,
        case_ids=case_ids, slice_indices=slice_idx,
        crop_origins=np.concatenate(origins).astype(np.int64),
        full_shapes=np.concatenate(shapes).astype(np.int64),
        sequences=sequences, spacing=np.concatenate(spacing).astype(np.float64),
        normalisation=normalisation)
