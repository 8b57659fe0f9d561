"""Load cases into :class:`deepgmm.types.CaseVolume`: MyoPS cases found on disk, or any set of
co-registered sequences given explicitly with an ROI mask.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence

import numpy as np

from deepgmm.data.myops import MYOPS_SEQUENCES, CaseFiles, discover_cases, labels_to_classes
from deepgmm.data.nifti import NiftiVolume, check_same_space, load_nifti
from deepgmm.errors import InputError
from deepgmm.types import CaseVolume

PathLike = str | os.PathLike[str]

N_CLASSES_WITH_BACKGROUND = 5


def _stack(images: Sequence[NiftiVolume]) -> np.ndarray:
    """``M`` volumes ``(X, Y, Z)`` -> ``(M, X, Y, Z)`` float32."""
    return np.stack([v.data for v in images]).astype(np.float32, copy=False)


def load_images(case_files: CaseFiles) -> list[NiftiVolume]:
    """Load one case's sequences (no ground truth needed) and check they share one grid.

    Returns:
        One :class:`NiftiVolume` per sequence, in channel order.

    Raises:
        InputError: unreadable files, or sequences on different grids.
    """
    images = [load_nifti(p, what=f"{name} image") for name, p in case_files.images.items()]
    check_same_space(images)
    return images


def load_case(case_files: CaseFiles, *, roi: np.ndarray | None = None) -> CaseVolume:
    """Load one MyoPS case: its sequences and its ground truth (when it has one).

    The ROI is the left ventricle: voxels of class 1..4 (blood, myocardium, edema, scar);
    the right ventricle (code 600) is background. A given ``roi`` replaces it (the ground
    truth, if any, is still loaded for evaluation); a case without ground truth needs one.

    Args:
        case_files: as found by :func:`deepgmm.data.myops.discover_cases`.
        roi: optional ``(X, Y, Z)`` mask on the case's grid (non-zero = inside), e.g. from
            an ROI run (:mod:`deepgmm.roi`) or a ``<case>_roi.nii.gz`` file.

    Returns:
        The case: image ``(M, X, Y, Z)``, roi and labels ``(X, Y, Z)`` (labels ``None``
        without ground truth).

    Raises:
        InputError: unreadable files, sequences/labels on different grids, unknown label
            codes, no ground truth and no ``roi`` (then no ROI is known), an ``roi`` of
            another shape, or an empty ROI.
    """
    if roi is None and case_files.roi is not None:
        mask = load_nifti(case_files.roi, what="ROI mask")
        check_same_space([load_nifti(next(iter(case_files.images.values())), what="image"),
                          mask])
        roi = mask.data != 0
    if case_files.labels is None and roi is None:
        raise InputError(f"case {case_files.case_id} has no ground-truth (_gd) file, so its "
                         f"region of interest is unknown; give an roi explicitly (predicted "
                         f"by an ROI run, or a mask)", params=("roi",))
    images = load_images(case_files)
    labels = None
    if case_files.labels is not None:
        gd = load_nifti(case_files.labels, what="ground-truth")
        check_same_space([images[0], gd])
        labels = labels_to_classes(gd.data, source=f"ground-truth file {str(gd.path)!r}",
                                   table=case_files.codes)
    first = images[0]
    if roi is None:
        roi_arr = labels > 0
        if not roi_arr.any():
            raise InputError(f"ground-truth file {str(case_files.labels)!r} has no "
                             f"left-ventricle voxels (codes 500, 200, 1220, 2221): the region "
                             f"of interest is empty")
    else:
        roi_arr = np.asarray(roi) != 0
        if roi_arr.shape != first.shape:
            raise InputError(f"case {case_files.case_id}: the ROI has shape {roi_arr.shape} "
                             f"but the images ({str(first.path)!r}) have {first.shape}")
        if not roi_arr.any():
            raise InputError(f"case {case_files.case_id}: the given region of interest is "
                             f"empty")
    return CaseVolume(case_id=case_files.case_id, sequences=tuple(case_files.images),
                      image=_stack(images), roi=roi_arr, labels=labels, affine=first.affine,
                      zooms=first.zooms, source=str(first.path),
                      files=tuple(str(v.path) for v in images))


def _labels_from_any(data: np.ndarray, source: str) -> np.ndarray:
    """Class indices 0..4 as they are, otherwise MyoPS codes mapped to classes."""
    values = np.unique(data)
    if np.isin(values, np.arange(N_CLASSES_WITH_BACKGROUND)).all():
        return np.rint(data).astype(np.int64)
    return labels_to_classes(data, source=f"{source} (neither class indices 0..4 nor MyoPS "
                                          f"codes)")


def load_explicit(images: Mapping[str, PathLike], roi: PathLike | np.ndarray | None,
                  labels: PathLike | None = None, case_id: str = "case") -> CaseVolume:
    """Load any co-registered sequences with an ROI mask (and optional ground truth).

    Args:
        images: sequence name -> NIfTI file, in channel order; any names, any number M >= 1.
        roi: NIfTI mask of the region of interest (every non-zero voxel is inside), an
            ``(X, Y, Z)`` array on the images' grid (e.g. predicted by an ROI run), or
            ``None``: the left ventricle of ``labels`` (classes 1..4).
        labels: optional ground truth, either class indices 0..4 (0 background, 1 blood,
            2 myocardium, 3 edema, 4 scar) or MyoPS codes (0, 200, 500, 600, 1220, 2221);
            a file whose values are all in 0..4 is read as class indices.
        case_id: the name used in messages and outputs.

    Returns:
        The case: image ``(M, X, Y, Z)``, roi ``(X, Y, Z)`` bool, labels or ``None``.

    Raises:
        InputError: no images, unreadable files, files on different grids, an empty ROI,
            or label values that are neither class indices nor MyoPS codes.
    """
    if not images:
        raise InputError("no image sequences given: expected at least one NAME=FILE")
    if roi is None and labels is None:
        raise InputError("the ROI from the ground truth needs labels", params=("labels",))
    vols = [load_nifti(p, what=f"{name} image") for name, p in images.items()]
    mask = None if roi is None or isinstance(roi, np.ndarray) else load_nifti(
        roi, what="ROI mask")
    extra = [] if mask is None else [mask]
    gd = None
    if labels is not None:
        gd = load_nifti(labels, what="ground-truth")
        extra.append(gd)
    check_same_space([*vols, *extra])
    first = vols[0]
    label_arr = None
    if gd is not None:
        label_arr = _labels_from_any(gd.data, f"ground-truth file {str(gd.path)!r}")
    if mask is not None:
        roi_arr = mask.data != 0
        what = f"ROI mask {str(mask.path)!r}"
        values = np.unique(mask.data)
        if not np.isin(values, (0, 1)).all():
            shown = ", ".join(f"{v:g}" for v in values[:5]) + (", ..." if values.size > 5
                                                               else "")
            warnings.warn(f"ROI mask {str(mask.path)!r} is not binary (values {shown}); "
                          "every non-zero voxel is taken as inside the region", stacklevel=2)
    elif isinstance(roi, np.ndarray):
        if roi.shape != first.data.shape:
            raise InputError(f"the ROI mask of case {case_id} has shape {roi.shape}, but the "
                             f"image {str(first.path)!r} has shape {first.data.shape}")
        roi_arr = np.asarray(roi) != 0
        what = f"the ROI of case {case_id}"
    else:
        roi_arr = label_arr > 0  # type: ignore[operator]
        what = f"the left ventricle of the ground truth {str(gd.path)!r}"  # type: ignore[union-attr]
    if not roi_arr.any():
        raise InputError(f"{what} is empty: expected non-zero voxels marking the region to "
                         f"segment")
    return CaseVolume(case_id=str(case_id), sequences=tuple(str(k) for k in images),
                      image=_stack(vols), roi=roi_arr, labels=label_arr, affine=first.affine,
                      zooms=first.zooms, source=str(first.path),
                      files=tuple(str(v.path) for v in vols))


def select_cases(cases: Sequence[CaseFiles], patients: Sequence[str] | None = None,
                 exclude: Sequence[str] | None = None) -> list[CaseFiles]:
    """Keep the cases named in ``patients`` (all when ``None``) minus those in ``exclude``.

    Raises:
        InputError: a requested or excluded id does not exist (the message lists the ids
            available), or nothing is left.
    """
    available = [c.case_id for c in cases]
    for ids, flag in ((patients, "patient"), (exclude, "excluded patient")):
        unknown = [p for p in (ids or []) if str(p) not in available]
        if unknown:
            raise InputError(f"unknown {flag} id(s) {', '.join(map(str, unknown))}; "
                             f"available: {', '.join(available)}")
    keep = set(map(str, patients)) if patients is not None else set(available)
    keep -= set(map(str, exclude or []))
    chosen = [c for c in cases if c.case_id in keep]
    if not chosen:
        raise InputError("no patients left after patients / exclude",
                         params=("patients", "exclude"))
    return chosen


def load_dataset(root: PathLike, patients: Sequence[str] | None = None, *,
                 exclude: Sequence[str] | None = None,
                 sequences: Sequence[str] = MYOPS_SEQUENCES,
                 rois: Mapping[str, np.ndarray] | None = None) -> list[CaseVolume]:
    """Load the MyoPS-style cases below ``root``.

    A folder without ground truth (e.g. the MyoPS ``test20/`` layout) loads when ``rois``
    gives every case's ROI; a warning then says which cases Dice will not be computed for.

    Args:
        root: folder searched by :func:`deepgmm.data.myops.discover_cases`.
        patients: case ids to load (e.g. ``["101", "102"]``); all when ``None``.
        exclude: case ids to leave out (e.g. the held-out test patients).
        sequences: sequence names, in channel order.
        rois: case id -> ``(X, Y, Z)`` ROI mask replacing the one from the ground truth;
            cases without ground truth need one.

    Returns:
        One :class:`CaseVolume` per case, sorted by case id.

    Raises:
        InputError: as :func:`discover_cases` and :func:`load_case`; an unknown patient id
            (listing the ids available); cases without ground truth and without an ROI
            (naming them and how to give one).
    """
    cases = select_cases(discover_cases(root, sequences, patients=patients), patients,
                         exclude)
    rois = rois or {}
    unlabelled = [c.case_id for c in cases if c.labels is None]
    with_mask = {c.case_id for c in cases if c.roi is not None}
    no_roi = [c for c in unlabelled if c not in rois and c not in with_mask]
    if no_roi:
        raise InputError(f"{len(no_roi)} case(s) below {str(root)!r} have no ground truth "
                         f"(_gd file): {', '.join(no_roi)}; their region of interest must be "
                         f"given (roi 'auto' with an roi_run, or roi = a folder of "
                         f"<case>_roi.nii.gz masks), and Dice cannot be computed for them",
                         params=("roi", "roi_run"))
    if unlabelled:
        warnings.warn(f"{len(unlabelled)} case(s) below {str(root)!r} have no ground truth "
                      f"(_gd file): {', '.join(unlabelled)}; Dice will not be computed for "
                      f"them", stacklevel=2)
    return [load_case(c, roi=rois.get(c.case_id)) for c in cases]


def case_label_summary(volume: CaseVolume) -> dict[str, object]:
    """Facts about one loaded case, for ``deepgmm info``.

    Returns:
        ``shape``, ``spacing``, ``n_slices``, ``roi_slices`` (slices with a non-empty ROI),
        ``classes`` (class indices present, background included) and ``all_class_slices``.
    """
    from deepgmm.data.slices import select_slices

    info: dict[str, object] = {
        "shape": volume.shape, "spacing": volume.zooms, "n_slices": volume.shape[2],
        "roi_slices": len(select_slices(volume, mode="roi")),
    }
    if volume.labels is not None:
        info["classes"] = [int(c) for c in np.unique(volume.labels)]
        info["all_class_slices"] = len(select_slices(volume, mode="all-classes"))
    return info
