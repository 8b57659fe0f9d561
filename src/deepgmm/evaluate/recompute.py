"""Recompute Dice and HD95 from a saved output folder against ground truth on disk.

Reads ``OUT/results.csv`` (which slices were segmented), ``OUT/summary.json`` (what each
map holds, see :mod:`deepgmm.report.outputs`) and the label maps, finds the ``_gd`` ground
truth of the same cases below a MyoPS-style root, checks that the grids agree, and writes
``OUT/evaluation.csv`` (one row per slice) and ``OUT/evaluation.json`` (means over
slices), each atomically.

Which map is scored:

- no rule given: the maps the run scored: ``<case>_seg_matched.nii.gz`` when the run
  wrote matched maps, else its own ``<case>_seg.nii.gz`` (MyoPS codes, or clusters 1..K
  read as classes 1..K);
- rule ``"none"``: the own label maps ``<case>_seg.nii.gz``, component k as class k;
- ``"hungarian"`` / ``"greedy"``: the clusters are assigned to the classes afresh from
  the own probability maps ``<case>_prob.nii.gz`` (inside the segmented region, where the
  own label map is not background), e.g. to report the Hungarian figures of a run written
  with the greedy rule. The saved maps are left as they are.

Folders written before the own and matched maps were separated (no ``maps`` entry in
``summary.json``) hold one label map with MyoPS codes; it is read as such.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from deepgmm.data.nifti import AFFINE_ATOL_MM  # also the largest label-map/truth gap
from deepgmm.errors import InputError
from deepgmm.evaluate.metrics import dice_per_class, hd95_per_class
from deepgmm.output_paths import add_to_manifest
from deepgmm.report.naming import NAMINGS, MapNames, map_names
from deepgmm.report.outputs import RESULTS_CSV, SUMMARY_JSON
from deepgmm.report.tables import (
    EVALUATION_COLUMNS,
    slice_rows,
    summarize,
    write_csv,
    write_json,
)
from deepgmm.types import CLASS_NAMES

EVALUATION_CSV = "evaluation.csv"
EVALUATION_JSON = "evaluation.json"


def read_results(out_dir: Path) -> tuple[dict[str, list[int]], str, str]:
    """The segmented slices of an output folder.

    Args:
        out_dir: a folder written by :func:`deepgmm.report.outputs.write_segmentation`.

    Returns:
        case id -> slice indices (in file order), the method and the matching rule.

    Raises:
        InputError: missing folder, no or malformed ``results.csv``.
    """
    if not out_dir.is_dir():
        raise InputError(f"output folder {str(out_dir)!r} does not exist or is not a folder")
    path = out_dir / RESULTS_CSV
    if not path.is_file():
        raise InputError(f"{str(out_dir)!r} is not a deepgmm output folder: it has no "
                         f"{RESULTS_CSV}")
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        slices: dict[str, list[int]] = {}
        for row in rows:
            slices.setdefault(str(row["case"]), []).append(int(row["slice"]))
    except (KeyError, TypeError, ValueError, UnicodeDecodeError, csv.Error) as err:
        raise InputError(f"{str(path)!r} is not a deepgmm results table (expected columns "
                         f"case and slice with integer slices): {err}") from err
    if not rows:
        raise InputError(f"{str(path)!r} lists no segmented slices")
    method = str(rows[0].get("method") or "unknown")
    matching = str(rows[0].get("matching") or "unknown")
    return slices, method, matching


def read_layout(out_dir: Path) -> tuple[bool, bool, MapNames]:
    """``(own map holds cluster numbers, matched maps were written, naming scheme)`` of an
    output folder, from its ``summary.json`` (``(False, False, deepgmm)`` for the older
    one-map layout).

    Raises:
        InputError: a ``summary.json`` that is not a JSON object.
    """
    import json

    path = out_dir / SUMMARY_JSON
    default = NAMINGS["deepgmm"]
    if not path.is_file():
        return False, False, default
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise InputError(f"cannot read {str(path)!r}: {err}") from err
    if not isinstance(summary, dict):
        raise InputError(f"{str(path)!r} is not a deepgmm summary (expected a JSON object)")
    maps = summary.get("maps")
    if not isinstance(maps, dict):
        return False, False, default
    names = map_names(str(summary.get("naming", "deepgmm")))
    return (summary.get("class_order") == "clusters",
            names.pattern(names.seg_matched) in maps, names)


def read_predicted_roi(out_dir: Path) -> bool:
    """Whether an output folder's ROI was predicted (``summary.json`` ``roi`` is ``auto``),
    for the LV rules (:func:`deepgmm.anatomy.anatomical_labels`' ``predicted_roi``)."""
    import json

    from deepgmm.report.outputs import is_predicted_roi

    try:
        summary = json.loads((out_dir / SUMMARY_JSON).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return is_predicted_roi(summary if isinstance(summary, dict) else None)


def read_anatomy(out_dir: Path) -> str:
    """The anatomy rule (:mod:`deepgmm.anatomy`) an output folder's label maps were made
    with (``"none"`` for folders written before the rule existed)."""
    import json

    from deepgmm.anatomy import ANATOMY_RULES

    try:
        summary = json.loads((out_dir / SUMMARY_JSON).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return "none"
    rule = summary.get("anatomy", "none") if isinstance(summary, dict) else "none"
    return rule if rule in ANATOMY_RULES else "none"


def _decode(data: np.ndarray, clusters: bool, source: str) -> np.ndarray:
    """``(S, X, Y)`` class indices of label-map values: MyoPS codes, or cluster numbers
    0..4 taken as class indices when ``clusters``."""
    from deepgmm.data.myops import labels_to_classes

    if not clusters:
        return labels_to_classes(data, source=source)
    values = np.asarray(data)
    if not np.all(np.isin(values, np.arange(len(CLASS_NAMES) + 1))):
        bad = sorted(set(np.unique(values).tolist()) - set(range(len(CLASS_NAMES) + 1)))
        raise InputError(f"{source} holds values {bad[:5]}; expected cluster numbers "
                         f"0..{len(CLASS_NAMES)}")
    return values.astype(np.int64)


def _rematch(prob_path: Path, seg_shape: tuple[int, ...], seg_affine: np.ndarray,
             z: np.ndarray, segmented: np.ndarray, truth: np.ndarray, rule: str, *,
             anatomy: str = "none", spacing: np.ndarray | None = None,
             predicted_roi: bool = False) -> np.ndarray:
    """``(S, X, Y)`` class indices after assigning the clusters of the saved probability
    maps to the classes with ``rule``, inside ``segmented (S, X, Y)``, labelled under the
    ``anatomy`` rule (spacing ``(S, 2)`` mm) as the run's own matched maps were."""
    import nibabel as nib
    import torch

    from deepgmm.evaluate.matching import apply_permutation, match_clusters

    expected = (*seg_shape[:3], 4)
    try:
        img = nib.load(str(prob_path))
        shape = tuple(int(n) for n in img.shape)
        affine = np.asarray(img.affine, dtype=np.float64)
        data = np.asarray(img.dataobj, dtype=np.float32)[:, :, z] if shape == expected \
            else None  # (X, Y, S, 4)
    except (OSError, ValueError, EOFError, nib.filebasedimages.ImageFileError) as err:
        raise InputError(f"cannot read the probability map {str(prob_path)!r}: {err}") from err
    if data is None:
        raise InputError(f"probability map {str(prob_path)!r} has shape {shape}, expected "
                         f"{expected} (the label map's grid and 4 classes)")
    if float(np.abs(affine - seg_affine).max()) > AFFINE_ATOL_MM:
        raise InputError(f"probability map {str(prob_path)!r} is not on its label map's grid")
    maps = np.moveaxis(data, (2, 3), (0, 1))  # (S, 4, X, Y)
    if not np.isfinite(maps).all():
        raise InputError(f"probability map {str(prob_path)!r} has NaN or infinite values")
    resp = torch.from_numpy(np.ascontiguousarray(maps))  # (S, 4, X, Y)
    region = torch.from_numpy(segmented)
    perm = match_clusters(resp, torch.from_numpy(truth), region, rule)
    from deepgmm.anatomy import apply_anatomy

    return apply_anatomy(anatomy, apply_permutation(resp, perm).numpy(), segmented, spacing,
                         predicted_roi=predicted_roi)


def _case_metrics(seg_path: Path, gd_path: Path, case: str, slices: Sequence[int],
                  matching: str | None = None, *, clusters: bool = False,
                  names: MapNames = NAMINGS["deepgmm"], anatomy: str = "none",
                  predicted_roi: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(S, 4)`` Dice and HD95 of one case's segmented slices of the label map
    ``seg_path`` (cluster numbers when ``clusters``, else MyoPS codes), the clusters
    re-assigned from the own probability map with ``matching`` when given."""
    from deepgmm.data.myops import labels_to_classes
    from deepgmm.data.nifti import load_nifti

    seg = load_nifti(seg_path, what="label map")
    gd = load_nifti(gd_path, what="ground-truth")
    if seg.shape != gd.shape:
        raise InputError(f"label map {str(seg_path)!r} has shape {seg.shape} but the ground "
                         f"truth {str(gd_path)!r} has shape {gd.shape}: they are not on one "
                         f"grid (wrong ROOT or case?)")
    diff = float(np.abs(seg.affine - gd.affine).max())
    if diff > AFFINE_ATOL_MM:
        raise InputError(f"label map {str(seg_path)!r} and ground truth {str(gd_path)!r} have "
                         f"different affines (up to {diff:.4g} mm apart): not the same grid")
    z = np.asarray(slices, dtype=np.int64)
    if z.min() < 0 or z.max() >= seg.shape[2]:
        raise InputError(f"{RESULTS_CSV} lists slice {int(z.max())} of case {case}, but its "
                         f"label map has {seg.shape[2]} slices")
    pred = _decode(np.moveaxis(seg.data[:, :, z], -1, 0), clusters,
                   source=f"label map {str(seg_path)!r}")
    truth = labels_to_classes(np.moveaxis(gd.data[:, :, z], -1, 0),
                              source=f"ground-truth file {str(gd_path)!r}")
    if matching is not None and matching != "none":
        prob_path = seg_path.with_name(f"{case}{names.prob}")
        if not prob_path.is_file():
            raise InputError(f"matching {matching!r} needs the probability map "
                             f"{str(prob_path)!r}, which is missing")
    spacing = np.broadcast_to(np.asarray(gd.zooms[:2], dtype=np.float64), (len(z), 2))
    if matching is not None and matching != "none":
        pred = _rematch(prob_path, seg.shape, seg.affine, z, pred > 0, truth, matching,
                        anatomy=anatomy, spacing=spacing, predicted_roi=predicted_roi)
    return dice_per_class(pred, truth), hd95_per_class(pred, truth, spacing)


def roi_slices(root: str | os.PathLike[str], cases: Sequence[str], roi: str | os.PathLike[str],
               roi_run: str | os.PathLike[str] | None = None,
               ) -> tuple[dict[str, list[int]], dict[str, Any]]:
    """The slices of each case whose ROI (``gt``, ``auto`` with ``roi_run``, or a folder of
    ``<case>_roi.nii.gz`` masks; :mod:`deepgmm.roi.source`) is not empty.

    Returns:
        case id -> slice indices (none for a case whose ROI is empty: it is warned about),
        and the source's JSON form (``roi``, ``roi_path``, ``roi_skipped``).
    """
    from deepgmm.roi.source import load_with_roi, parse_roi_option

    source = parse_roi_option(roi, roi_run)
    volumes = load_with_roi(root, source, list(cases), progress=False)
    found = {v.case_id: [int(z) for z in np.flatnonzero(v.roi.any(axis=(0, 1)))]
             for v in volumes}
    return {c: found.get(c, []) for c in cases}, source.as_dict()


def evaluate_outputs(out_dir: str | os.PathLike[str], root: str | os.PathLike[str],
                     patients: Sequence[str] | None = None, *,
                     matching: str | None = None, roi: str | os.PathLike[str] | None = None,
                     roi_run: str | os.PathLike[str] | None = None,
                     write: bool = True) -> dict[str, Any]:
    """Recompute the metrics of saved label maps against the ground truth below ``root``.

    Args:
        out_dir: output folder with ``results.csv`` and ``<case>_seg.nii.gz``.
        root: MyoPS-style data folder holding the ``_gd`` files of those cases.
        patients: evaluate only these case ids (all cases of ``out_dir`` when None).
        matching: ``"hungarian"`` or ``"greedy"``: assign the clusters of the own
            probability maps to the classes with this rule; ``"none"``: score the own
            label maps as they are; ``None``: the maps the run scored (the matched maps
            when it wrote them, with the run's rule).
        roi: ``None``: score the slices the run segmented (``results.csv``); ``"gt"``,
            ``"auto"`` (with ``roi_run``) or a folder of ``<case>_roi.nii.gz`` masks: also
            score every other slice where that ROI is not empty, as predicted background
            (e.g. the ground truth's LV slices that an ROI network missed).
        roi_run: the ROI run folder for ``roi="auto"``.
        write: also write ``evaluation.csv`` and ``evaluation.json`` into ``out_dir``.

    Returns:
        ``{"method", "n_slices", "matching", "dice", "dice_sd", "hd95", "cases"}`` with
        class-name dicts of means over slices (``null`` where undefined); with ``roi``
        also ``roi`` (the source's ``roi``, ``roi_path``, ``roi_skipped``) and
        ``n_slices_not_segmented``.

    Raises:
        InputError: missing or foreign output folder, unknown patients, missing label maps
            or ground truth, grids that do not match.
    """
    from deepgmm.data.myops import discover_cases

    out = Path(out_dir)
    slices, method, written_rule = read_results(out)
    clusters, has_matched, names = read_layout(out)
    anatomy = read_anatomy(out)
    predicted = read_predicted_roi(out)
    if matching is not None:
        from deepgmm.evaluate.matching import check_rule

        check_rule(matching)
    if patients is not None:
        unknown = [p for p in map(str, patients) if p not in slices]
        if unknown:
            raise InputError(f"case(s) {', '.join(unknown)} are not in {str(out_dir)!r}; it "
                             f"holds {', '.join(slices)}")
        slices = {p: slices[p] for p in map(str, patients)}
    segmented_slices = {case: set(zs) for case, zs in slices.items()}
    roi_record = None
    if roi is not None:
        extra, roi_record = roi_slices(root, list(slices), roi, roi_run)
        slices = {case: sorted(set(zs) | set(extra[case])) for case, zs in slices.items()}
    gd_files = {c.case_id: c.labels for c in discover_cases(root)}
    dice_parts, hd_parts, case_col, slice_col = [], [], [], []
    use_matched = matching is None and has_matched
    for case, zs in slices.items():  # one volume per case; metrics vectorised over slices
        seg_path = out / f"{case}{names.seg_matched if use_matched else names.seg}"
        if not seg_path.is_file():
            raise InputError(f"{str(out_dir)!r} lists case {case} but has no label map "
                             f"{seg_path.name}")
        gd_path = gd_files.get(case)
        if gd_path is None:
            why = "is not below" if case not in gd_files else "has no ground-truth (_gd) file in"
            raise InputError(f"case {case} {why} {str(root)!r}: no ground truth to evaluate "
                             f"against")
        dice, hd = _case_metrics(seg_path, gd_path, case, zs, matching,
                                 clusters=clusters and not use_matched, names=names,
                                 anatomy=anatomy, predicted_roi=predicted)
        dice_parts.append(dice)
        hd_parts.append(hd)
        case_col += [case] * len(zs)
        slice_col += list(zs)
    dice_all = np.concatenate(dice_parts)
    hd_all = np.concatenate(hd_parts)
    summary = summarize(method=method, matching=matching or written_rule, dice=dice_all,
                        hd95=hd_all)
    del summary["nll"], summary["seconds_per_slice"]
    summary["cases"] = list(slices)
    if roi_record is not None:
        summary["roi"] = roi_record
        summary["n_slices_not_segmented"] = sum(
            len(set(zs) - segmented_slices[case]) for case, zs in slices.items())
    if write:
        rows = slice_rows(case_col, slice_col, dice=dice_all, hd95=hd_all)
        write_csv(out / EVALUATION_CSV, rows, EVALUATION_COLUMNS)
        write_json(out / EVALUATION_JSON, summary)
        add_to_manifest(out, [EVALUATION_CSV, EVALUATION_JSON], create=False)
    return summary

