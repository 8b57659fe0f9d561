"""ROI masks from an ROI run: for arrays, for loaded cases and for a folder of cases.

A case goes onto the network grid (:mod:`deepgmm.roi.geometry`), the network gives the LV
probability of every window pixel, the probabilities go back onto the input grid (bilinear)
and :func:`deepgmm.roi.postprocess.probabilities_to_mask` makes the mask with the run's
threshold, opening radius and smallest LV area. :func:`predict_folder` writes
``<case>_roi.nii.gz`` (uint8, 1 = ROI) with the geometry (affine, qform and sform) of the
case's first sequence, plus ``roi_summary.json``; a case where no LV is found is reported,
warned about and skipped.

Shapes: an image is ``(M, X, Y, Z)``, masks and probabilities ``(X, Y, Z)``.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepgmm.errors import InputError
from deepgmm.roi.geometry import image_to_network, network_to_input, slice_grid
from deepgmm.roi.model import RoiModel, check_sequences, load_roi_run
from deepgmm.roi.postprocess import DEFAULT_OPENING_MM, probabilities_to_mask

PathLike = str | os.PathLike[str]

ROI_SUFFIX = "_roi.nii.gz"
ROI_SUMMARY = "roi_summary.json"
PREDICT_BATCH = 16
"""Slices passed through the network at once."""


def roi_file_name(case_id: str) -> str:
    """``<case>_roi.nii.gz``."""
    return f"{case_id}{ROI_SUFFIX}"


@torch.no_grad()
def predict_probabilities(model: RoiModel, image: np.ndarray,
                          zooms: Sequence[float]) -> np.ndarray:
    """LV probability of every voxel of a case.

    Args:
        model: a trained ROI model.
        image: ``(M, X, Y, Z)`` sequences in the model's channel order.
        zooms: voxel spacing in mm, ``(dx, dy, ...)``.

    Returns:
        ``(X, Y, Z)`` float32 in [0, 1]; 0 outside the network's window.
    """
    if image.ndim != 4 or image.shape[0] != len(model.sequences):
        raise InputError(f"image must be (M, X, Y, Z) with M = {len(model.sequences)} "
                         f"sequences ({', '.join(model.sequences)}), got shape {image.shape}")
    grid = slice_grid(image.shape[1:3], zooms, spacing_mm=float(model.config["spacing_mm"]),
                      crop=int(model.config["crop"]))
    windows = image_to_network(image, grid)  # (Z, M, C, C)
    device = next(model.network.parameters()).device
    model.network.eval()
    probs = torch.cat([
        torch.softmax(model.network(windows[i:i + PREDICT_BATCH].to(device)), dim=1)[:, 1]
        for i in range(0, windows.shape[0], PREDICT_BATCH)]).cpu()
    return np.clip(network_to_input(probs, grid), 0.0, 1.0)


def predict_mask(model: RoiModel, image: np.ndarray, zooms: Sequence[float]) -> np.ndarray:
    """The post-processed ``(X, Y, Z)`` bool ROI mask of a case (see the module docstring)."""
    probabilities = predict_probabilities(model, image, zooms)
    return probabilities_to_mask(probabilities, zooms,
                                 threshold=float(model.config["threshold"]),
                                 min_area_mm2=float(model.config["min_area_mm2"]),
                                 opening_mm=float(model.config.get(
                                     "opening_mm", DEFAULT_OPENING_MM)))


@dataclass
class CaseRoi:
    """What :func:`predict_folder` found for one case.

    Attributes:
        case_id: the case.
        slices: indices along Z of the slices with LV.
        n_slices: slices of the case.
        volume_ml: ROI volume (voxel count x voxel volume).
        file: the written mask's name in the output folder, or ``None`` (case skipped).
    """

    case_id: str
    slices: list[int]
    n_slices: int
    volume_ml: float
    file: str | None


def _check_output(out: Path, inputs: Sequence[Path]) -> None:
    """Refuse an output folder holding inputs or something else than an earlier output."""
    from deepgmm.output_paths import check_output_folder

    check_output_folder(out, inputs, kind="`deepgmm roi predict`")


def open_roi_run_for(run_dir: PathLike, root: PathLike) -> RoiModel:
    """Load an ROI run and check that the data below ``root`` has its sequences.

    Raises:
        CheckpointError: a bad run, or data without the run's sequences (naming both).
    """
    from deepgmm.data.myops import sequence_names

    model = load_roi_run(run_dir)
    found = sequence_names(root) if Path(root).is_dir() else ()
    if found and not set(model.sequences) <= set(found):
        check_sequences(model.config, found, run=model.name(), data=f"the data in "
                                                                   f"{str(root)!r}")
    return model


def predict_cases(model: RoiModel, root: PathLike, patients: Sequence[str] | None = None,
                  *, progress: bool = True) -> dict[str, tuple[np.ndarray, Any]]:
    """Masks for the cases below ``root`` (MyoPS layout; ground truth not needed).

    Returns:
        case id -> (``(X, Y, Z)`` bool mask, the first sequence's :class:`NiftiVolume`
        whose geometry the mask has), in case order.
    """
    from tqdm.auto import tqdm

    from deepgmm.data.dataset import load_images, select_cases
    from deepgmm.data.myops import discover_cases

    cases = select_cases(discover_cases(root, model.sequences, patients=patients), patients)
    masks: dict[str, tuple[np.ndarray, Any]] = {}
    for case in tqdm(cases, desc="roi predict", unit="case", disable=not progress):
        images = load_images(case)
        stack = np.stack([v.data for v in images]).astype(np.float32, copy=False)
        masks[case.case_id] = (predict_mask(model, stack, images[0].zooms), images[0])
    return masks


def predict_folder(run_dir: PathLike, root: PathLike, out: PathLike,
                   patients: Sequence[str] | None = None, *,
                   progress: bool = True) -> list[CaseRoi]:
    """Write ``OUT/<case>_roi.nii.gz`` for every case below ``root`` and ``roi_summary.json``.

    The output folder is built beside ``out`` and renamed into place once complete. A case
    where no LV is found gets no mask file: it is listed in the summary with ``file: null``
    and a warning names it; the other cases go on.

    Returns:
        One :class:`CaseRoi` per case.

    Raises:
        CheckpointError: a bad ROI run, or data without its sequences.
        InputError: bad data, unknown patients, an output folder that would replace inputs
            or other data.
    """
    from deepgmm._atomic import atomic_dir
    from deepgmm.data.nifti import save_nifti

    out = Path(out)
    _check_output(out, [Path(root), Path(run_dir)])
    model = open_roi_run_for(run_dir, root)
    masks = predict_cases(model, root, patients, progress=progress)
    results: list[CaseRoi] = []
    with atomic_dir(out) as tmp:
        for case_id, (mask, ref) in masks.items():
            slices = [int(z) for z in np.flatnonzero(mask.any(axis=(0, 1)))]
            volume = float(mask.sum() * np.prod(ref.zooms) / 1000.0)
            name = None
            if slices:
                name = roi_file_name(case_id)
                save_nifti(mask.astype(np.uint8), ref.affine, tmp / name,
                           template_header=ref.header)
            else:
                warnings.warn(f"case {case_id}: no left ventricle found (the predicted ROI is "
                              f"empty); case skipped", stacklevel=2)
            results.append(CaseRoi(case_id=case_id, slices=slices, n_slices=mask.shape[2],
                                   volume_ml=volume, file=name))
        summary = {"roi_run": str(Path(run_dir)), "root": str(Path(root)),
                   "sequences": list(model.sequences),
                   "train_patients": model.config.get("train_patients", []),
                   "cases": [asdict(r) for r in results],
                   "skipped": [r.case_id for r in results if r.file is None]}
        (tmp / ROI_SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
    return results


__all__ = ["CaseRoi", "predict_cases", "predict_folder", "predict_mask",
           "predict_probabilities", "roi_file_name"]
