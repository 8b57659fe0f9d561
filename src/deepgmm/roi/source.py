"""Where a segmenting command's ROI comes from: ``gt``, ``auto`` or a folder of masks.

- ``gt``: the ground truth's left ventricle (classes 1..4), as before;
- ``auto``: predicted by an ROI run (:mod:`deepgmm.roi.predict`), for data with or without
  ground truth;
- a folder: ``<case>_roi.nii.gz`` masks (``deepgmm roi predict`` output, or drawn by hand)
  on each case's grid.

With ``auto`` and a folder, the ground truth (where present) is still loaded for Dice. A
case whose ROI is empty (``auto`` found no LV, or ``deepgmm roi predict`` skipped it) is
left out with a warning; the other cases go on. The slice selection ``roi`` and the crop
centre then follow the ROI in use (:func:`deepgmm.data.slices.select_slices`,
:func:`deepgmm.data.slices.crop_center`).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deepgmm.errors import InputError
from deepgmm.types import CaseVolume

PathLike = str | os.PathLike[str]

ROI_CHOICES: tuple[str, ...] = ("gt", "auto")
"""The named ROI sources; anything else is a folder of ``<case>_roi.nii.gz`` masks."""


@dataclass
class RoiSource:
    """The ROI a run used, for its outputs (``summary.json``, ``results.csv``).

    Attributes:
        kind: ``"gt"``, ``"auto"`` or ``"folder"``.
        path: the ROI run (``auto``) or the mask folder (``folder``); ``None`` for ``gt``.
        skipped: cases left out because their ROI was empty.
    """

    kind: str
    path: str | None = None
    skipped: list[str] = field(default_factory=list)

    def label(self) -> str:
        """One word for a table column: ``gt``, ``auto`` or ``folder``."""
        return self.kind

    def as_dict(self) -> dict[str, Any]:
        """JSON form: ``{"roi": kind, "roi_path": path, "roi_skipped": [...]}``."""
        return {"roi": self.kind, "roi_path": self.path, "roi_skipped": list(self.skipped)}


def parse_roi_option(roi: str | PathLike, roi_run: PathLike | None) -> RoiSource:
    """Check ``--roi`` / ``--roi-run`` and say what they mean (nothing is loaded yet).

    Raises:
        InputError: ``auto`` without ``roi_run``, ``roi_run`` with another ``roi``, or a
            folder that does not exist (messages name the parameters ``roi`` and
            ``roi_run``; the command line prints its flags instead).
    """
    value = str(roi)
    if value == "auto":
        if roi_run is None:
            raise InputError("roi 'auto' needs roi_run, the folder of an ROI training run",
                             params=("roi", "roi_run"))
        return RoiSource(kind="auto", path=str(roi_run))
    if roi_run is not None:
        raise InputError(f"roi_run applies to roi 'auto' only, got roi {value!r}",
                         params=("roi", "roi_run"))
    if value == "gt":
        return RoiSource(kind="gt")
    if not Path(value).is_dir():
        raise InputError(f"roi must be 'gt', 'auto' or a folder of <case>_roi.nii.gz masks; "
                         f"{value!r} is not a folder", params=("roi",))
    return RoiSource(kind="folder", path=value)


def _folder_masks(folder: Path, cases: Sequence[Any]) -> dict[str, np.ndarray | None]:
    """``<case>_roi.nii.gz`` of every case, on its grid; ``None`` where ``roi predict``
    skipped the case (listed in the folder's summary) or the mask is empty."""
    from deepgmm.data.nifti import check_same_space, load_nifti
    from deepgmm.roi.predict import ROI_SUMMARY, roi_file_name

    skipped: set[str] = set()
    summary = folder / ROI_SUMMARY
    if summary.is_file():
        try:
            skipped = {str(c) for c in json.loads(summary.read_text()).get("skipped", [])}
        except (OSError, ValueError, AttributeError) as err:
            raise InputError(f"{str(summary)!r} is not valid JSON: {err}") from err
    masks: dict[str, np.ndarray | None] = {}
    for case in cases:
        path = folder / roi_file_name(case.case_id)
        if not path.is_file() and case.case_id in skipped:
            masks[case.case_id] = None
            continue
        if not path.is_file():
            raise InputError(f"case {case.case_id}: no ROI mask in the folder "
                             f"{str(folder)!r}: expected the file {str(path)!r}")
        mask = load_nifti(path, what="ROI mask")
        check_same_space([load_nifti(next(iter(case.images.values())), what="image"), mask])
        masks[case.case_id] = mask.data != 0
    return masks


def load_with_roi(root: PathLike, source: RoiSource, patients: Sequence[str] | None = None,
                  *, exclude: Sequence[str] | None = None,
                  sequences: Sequence[str] | None = None,
                  progress: bool = True) -> list[CaseVolume]:
    """Load the cases below ``root`` with the ROI ``source`` names.

    Args:
        root: MyoPS-layout data folder (ground truth optional unless ``source`` is ``gt``).
        source: from :func:`parse_roi_option`; its ``skipped`` list is filled in here.
        patients, exclude: case ids to keep / leave out.
        sequences: sequence names in channel order (default: the ROI run's for ``auto``,
            else C0, DE, T2).
        progress: progress bar of the ROI prediction.

    Returns:
        The cases with a non-empty ROI, sorted by case id.

    Raises:
        InputError / CheckpointError: as :func:`deepgmm.data.dataset.load_dataset` and
            :func:`deepgmm.roi.predict.open_roi_run_for`; a missing mask file or one on
            another grid than the images (naming both); every case's ROI empty.
    """
    from deepgmm.data.dataset import load_dataset, select_cases
    from deepgmm.data.myops import MYOPS_SEQUENCES, discover_cases

    if source.kind == "gt":
        return load_dataset(root, patients, exclude=exclude,
                            sequences=tuple(sequences or MYOPS_SEQUENCES))
    if source.kind == "auto":
        from deepgmm.roi.model import check_sequences
        from deepgmm.roi.predict import open_roi_run_for, predict_cases

        model = open_roi_run_for(source.path, root)  # type: ignore[arg-type]
        if sequences is not None:
            check_sequences(model.config, sequences, run=model.name(),
                            data="the data as asked for")
        wanted = model.sequences
        found = discover_cases(root, wanted, patients=patients)
        ids = [c.case_id for c in select_cases(found, patients, exclude)]
        masks: dict[str, np.ndarray | None] = {
            case: mask for case, (mask, _) in predict_cases(model, root, ids,
                                                            progress=progress).items()}
    else:
        wanted = tuple(sequences or MYOPS_SEQUENCES)
        cases = select_cases(discover_cases(root, wanted, patients=patients), patients,
                             exclude)
        masks = _folder_masks(Path(source.path), cases)  # type: ignore[arg-type]
    source.skipped = [c for c, m in masks.items() if m is None or not m.any()]
    for case in source.skipped:
        why = ("no left ventricle found" if source.kind == "auto"
               else "its ROI mask is missing from the ROI prediction or empty")
        warnings.warn(f"case {case}: {why}; case skipped", stacklevel=2)
    kept = [c for c in masks if c not in source.skipped]
    if not kept:
        raise InputError(f"no case below {str(root)!r} has a non-empty ROI (ROI source: "
                         f"{source.path if source.kind == 'folder' else source.kind})")
    return load_dataset(root, kept, sequences=wanted,
                        rois={c: masks[c] for c in kept})  # type: ignore[misc]


def explicit_roi(roi: str | PathLike, roi_run: PathLike | None,
                 images: Mapping[str, PathLike], labels: PathLike | None, *,
                 case_id: str = "case") -> tuple[RoiSource, np.ndarray | Path | None]:
    """The ROI of one explicitly given case (``deepgmm segment``).

    Args:
        roi: ``"gt"`` (the left ventricle of ``labels``), ``"auto"`` (predicted from
            ``images`` by the ROI run ``roi_run``) or a NIfTI mask file.
        roi_run: the ROI run folder, for ``"auto"`` only.
        images: sequence name -> NIfTI file; for ``"auto"`` they must include the run's
            sequences (by name, any order).
        labels: the ground truth, needed for ``"gt"``.
        case_id: the case's name in messages.

    Returns:
        The source (kind ``gt``, ``auto`` or ``file``) and what
        :func:`deepgmm.data.dataset.load_explicit` takes as its ``roi``: ``None`` (the
        ground truth's LV), the predicted ``(X, Y, Z)`` bool mask or the mask file.

    Raises:
        InputError: ``gt`` without labels, ``auto`` without ``roi_run``, ``roi_run`` with
            another ``roi``, a mask file that does not exist, images on different grids, no
            left ventricle found.
        CheckpointError: a bad ROI run, or images without the run's sequences (naming both).
    """
    value = str(roi)
    if value != "auto" and roi_run is not None:
        raise InputError(f"roi_run applies to roi 'auto' only, got roi {value!r}",
                         params=("roi", "roi_run"))
    if value == "gt":
        if labels is None:
            raise InputError("roi 'gt' takes the left ventricle of the ground truth: give "
                             "labels, or roi 'auto' with a roi_run, or an ROI mask file",
                             params=("roi", "labels", "roi_run"))
        return RoiSource(kind="gt", path=str(labels)), None
    if value != "auto":
        if not Path(value).is_file():
            raise InputError(f"roi must be 'gt', 'auto' or a NIfTI mask file; {value!r} is "
                             f"not a file", params=("roi",))
        return RoiSource(kind="file", path=value), Path(value)
    if roi_run is None:
        raise InputError("roi 'auto' needs roi_run, the folder of an ROI training run",
                         params=("roi", "roi_run"))
    from deepgmm.data.nifti import check_same_space, load_nifti
    from deepgmm.roi.model import check_sequences, load_roi_run
    from deepgmm.roi.predict import predict_mask

    model = load_roi_run(roi_run)
    if not set(model.sequences) <= set(images):
        check_sequences(model.config, list(images), run=model.name(),
                        data=f"case {case_id} (its images)")
    vols = [load_nifti(images[name], what=f"{name} image") for name in model.sequences]
    check_same_space(vols)
    stack = np.stack([v.data for v in vols]).astype(np.float32, copy=False)  # (M, X, Y, Z)
    mask = predict_mask(model, stack, vols[0].zooms)
    if not mask.any():
        raise InputError(f"case {case_id}: {model.name()} found no left "
                         f"ventricle in its images; nothing to segment (give an ROI mask "
                         f"file as roi)", params=("roi",))
    return RoiSource(kind="auto", path=str(roi_run)), mask
