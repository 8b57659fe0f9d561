"""The output folder every segmenting command writes.

Layout of ``OUT`` (built in a temporary folder and renamed into place, so it is either
complete or absent):

- ``<case>_seg.nii.gz``: ``(X, Y, Z)`` int16 label map with MyoPS codes (0, 500 blood,
  200 myocardium, 1220 edema, 2221 scar); slices that were not segmented are 0.
- ``<case>_prob.nii.gz``: ``(X, Y, Z, 4)`` float32 class probabilities (blood, myocardium,
  edema, scar), 0 outside the segmented ROI.
- ``results.csv``: one row per slice (:data:`deepgmm.report.tables.RESULT_COLUMNS`).
- ``summary.json``: means over slices (:func:`deepgmm.report.tables.summarize`).
- ``figures/<case>_slice<z>.png``: sequences, prediction and truth side by side.

Both NIfTI files carry the input's affine (qform and sform) so they overlay the input.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from deepgmm._atomic import atomic_dir
from deepgmm.errors import InputError
from deepgmm.evaluate.matching import apply_permutation, check_rule, match_clusters
from deepgmm.evaluate.metrics import dice_per_class, hd95_per_class
from deepgmm.report.figures import slice_figure
from deepgmm.report.tables import RESULT_COLUMNS, slice_rows, summarize, write_csv, write_json
from deepgmm.types import CLASS_NAMES, CLASS_TO_MYOPS, CaseVolume, SegmentationResult, SliceBatch

SEG_SUFFIX = "_seg.nii.gz"
PROB_SUFFIX = "_prob.nii.gz"
RESULTS_CSV = "results.csv"
SUMMARY_JSON = "summary.json"


def _numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def labels_to_codes(labels: np.ndarray) -> np.ndarray:
    """Class indices 0..4 -> MyoPS codes, int16, same shape."""
    return np.asarray(CLASS_TO_MYOPS, dtype=np.int16)[np.asarray(labels, dtype=np.int64)]


def class_maps(resp: torch.Tensor | np.ndarray, roi: torch.Tensor | np.ndarray,
               perm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Matched probabilities and label map of a batch.

    Args:
        resp: ``(B, K, H, W)`` responsibilities of the fitted clusters.
        roi: ``(B, H, W)`` bool.
        perm: ``(B, K)`` cluster per class channel (:func:`match_clusters`).

    Returns:
        ``(B, K, H, W)`` float32 class probabilities, 0 outside the ROI, and ``(B, H, W)``
        int64 labels: argmax + 1 inside the ROI, 0 outside.
    """
    probs = apply_permutation(_numpy(resp).astype(np.float32, copy=False), perm)
    roi_np = _numpy(roi).astype(bool)
    probs = np.where(roi_np[:, None], probs, np.float32(0.0))
    labels = np.where(roi_np, np.argmax(probs, axis=1) + 1, 0).astype(np.int64)
    return probs, labels


def _is_within(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
        return True
    except ValueError:
        return False


def check_output_dir(out_dir: Path, inputs: Sequence[str | os.PathLike[str]]) -> Path:
    """Refuse output folders that would replace inputs or foreign data.

    The folder is replaced as a whole, so it must not be (or contain) an input file, and an
    existing non-empty folder must be an earlier output (it has ``summary.json``).

    Raises:
        InputError: naming the folder and the reason.
    """
    out = Path(out_dir).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise InputError(f"output {str(out_dir)!r} exists and is not a folder")
    for src in inputs:
        if not str(src):
            continue
        src_path = Path(src).expanduser().resolve()
        if src_path == out or _is_within(src_path, out):
            raise InputError(f"output folder {str(out_dir)!r} contains the input "
                             f"{str(src)!r}; choose another output folder")
    if out.is_dir() and any(out.iterdir()) and not (out / SUMMARY_JSON).is_file():
        raise InputError(f"output folder {str(out_dir)!r} exists and is not an earlier "
                         f"deepgmm output (no {SUMMARY_JSON}); choose a new or empty folder")
    return out


def _check_inputs(volumes: Sequence[CaseVolume], batch: SliceBatch,
                  result: SegmentationResult) -> dict[str, CaseVolume]:
    """Validate that batch, result and volumes belong together; return volumes by id."""
    resp = result.responsibilities
    n_b = len(batch)
    if resp.ndim != 4 or resp.shape[0] != n_b or tuple(resp.shape[2:]) != tuple(
            batch.roi.shape[1:]):
        raise InputError(f"responsibilities {tuple(resp.shape)} do not match the batch: "
                         f"expected (B, K, H, W) with B, H, W = {n_b}, "
                         f"{tuple(batch.roi.shape[1:])}")
    if resp.shape[1] != len(CLASS_NAMES):
        raise InputError(f"writing label maps needs K = {len(CLASS_NAMES)} classes, "
                         f"got K = {resp.shape[1]}")
    roi = _numpy(batch.roi).astype(bool)
    bad = ~np.isfinite(_numpy(resp)).all(axis=1) & roi                     # (B, H, W)
    if bad.any():
        where = [f"case {batch.case_ids[b]} slice {batch.slice_indices[b]}"
                 for b in np.flatnonzero(bad.any(axis=(1, 2)))]
        raise InputError(f"responsibilities are NaN or infinite inside the ROI of "
                         f"{', '.join(where)}: the fit diverged; nothing was written")
    for name in ("nll", "n_iter", "seconds"):
        v = getattr(result, name)
        if len(v) != n_b:
            raise InputError(f"result.{name} has length {len(v)}, expected B = {n_b}")
    by_id = {v.case_id: v for v in volumes}
    missing = sorted(set(batch.case_ids) - set(by_id))
    if missing:
        raise InputError(f"no volume given for case(s) {', '.join(missing)} of the batch")
    full = np.asarray(batch.full_shapes).reshape(n_b, 2)
    for b, cid in enumerate(batch.case_ids):
        shape = by_id[cid].shape
        z = int(batch.slice_indices[b])
        if tuple(int(s) for s in full[b]) != shape[:2] or not 0 <= z < shape[2]:
            raise InputError(f"slice {z} of case {cid} (in-plane {tuple(full[b])}) does not "
                             f"fit its volume of shape {shape}")
    return by_id


def write_segmentation(out_dir: str | os.PathLike[str], volumes: Sequence[CaseVolume],
                       batch: SliceBatch, result: SegmentationResult, *,
                       matching: str = "hungarian", figures: bool = True,
                       progress: bool = True) -> dict[str, Any]:
    """Write label maps, probability maps, tables and figures of a segmented batch.

    Args:
        out_dir: the output folder; replaced as a whole once everything is written.
        volumes: the cases the batch was cut from (grids, affines).
        batch: the segmented slices: roi ``(B, H, W)``, labels ``(B, H, W)`` or None,
            image ``(B, M, H, W)`` (for figures), crop origins, slice indices, spacing.
        result: responsibilities ``(B, K, H, W)`` with K = 4, nll/n_iter/seconds ``(B,)``.
        matching: ``"hungarian"``, ``"greedy"`` (both need ``batch.labels``) or ``"none"``.
        figures: write ``figures/<case>_slice<z>.png``.
        progress: show a progress bar.

    Returns:
        The summary dict written to ``summary.json``.

    Raises:
        InputError: matching without ground truth, mismatched inputs, or an output folder
            that would replace inputs or foreign data.
    """
    from deepgmm.data.nifti import save_nifti
    from deepgmm.data.slices import uncrop

    check_rule(matching)
    if matching != "none" and batch.labels is None:
        raise InputError(f"matching {matching!r} needs ground-truth labels, but the input "
                         "has none; use matching 'none'")
    by_id = _check_inputs(volumes, batch, result)
    out = check_output_dir(Path(out_dir), [v.source for v in volumes])

    roi = _numpy(batch.roi).astype(bool)
    truth = None if batch.labels is None else _numpy(batch.labels).astype(np.int64)
    perm = match_clusters(result.responsibilities, truth, roi, matching)
    probs, labels = class_maps(result.responsibilities, roi, perm)
    n_b = len(batch)
    spacing = np.asarray(batch.spacing, dtype=np.float64)
    if spacing.shape != (n_b, 2):  # a hand-made batch without spacing: the volumes' zooms
        spacing = np.array([by_id[c].zooms[:2] for c in batch.case_ids], dtype=np.float64)
    dice = hd95 = None
    if truth is not None:
        dice = dice_per_class(labels, truth)
        hd95 = hd95_per_class(labels, truth, spacing)

    nll = _numpy(result.nll).astype(np.float64).reshape(n_b)
    n_iter = _numpy(result.n_iter).astype(np.int64).reshape(n_b)
    seconds = _numpy(result.seconds).astype(np.float64).reshape(n_b)
    rows = slice_rows(batch.case_ids, batch.slice_indices, dice=dice, hd95=hd95,
                      extra={"method": [result.method] * n_b, "nll": list(nll),
                             "iterations": [int(i) for i in n_iter],
                             "seconds": list(seconds), "matching": [matching] * n_b})
    summary = summarize(method=result.method, matching=matching, dice=dice, hd95=hd95,
                        nll=nll, seconds=seconds, n_slices=n_b)

    case_order = list(dict.fromkeys(batch.case_ids))
    origins = np.asarray(batch.crop_origins, dtype=np.int64).reshape(n_b, 2)
    image = _numpy(batch.image) if figures else None
    n_steps = len(case_order) + (n_b if figures else 0)
    with atomic_dir(out) as tmp, tqdm(total=n_steps, desc="writing outputs", unit="file",
                                      disable=not progress, leave=False) as bar:
        for cid in case_order:
            vol = by_id[cid]
            x, y, z = vol.shape
            seg = np.zeros((x, y, z), dtype=np.int16)
            prob = np.zeros((x, y, z, len(CLASS_NAMES)), dtype=np.float32)
            for b in (i for i, c in enumerate(batch.case_ids) if c == cid):
                k = int(batch.slice_indices[b])
                origin = (int(origins[b, 0]), int(origins[b, 1]))
                seg[:, :, k] = labels_to_codes(uncrop(labels[b], origin, (x, y), fill=0))
                prob[:, :, k, :] = np.moveaxis(uncrop(probs[b], origin, (x, y), fill=0), 0, -1)
            save_nifti(seg, vol.affine, tmp / f"{cid}{SEG_SUFFIX}")
            save_nifti(prob, vol.affine, tmp / f"{cid}{PROB_SUFFIX}")
            bar.update(1)
        write_csv(tmp / RESULTS_CSV, rows, RESULT_COLUMNS)
        write_json(tmp / SUMMARY_JSON, summary)
        if image is not None:
            (tmp / "figures").mkdir()
            for b in range(n_b):
                cid, k = batch.case_ids[b], int(batch.slice_indices[b])
                slice_figure(tmp / "figures" / f"{cid}_slice{k}.png", image[b],
                             batch.sequences, labels[b], None if truth is None else truth[b],
                             title=f"case {cid}, slice {k}, {result.method}")
                bar.update(1)
    return summary
