"""The output folder every segmenting command writes.

Layout of ``OUT`` (built in a temporary folder and renamed into place, so it is either
complete or absent):

- ``<case>_seg.nii.gz``: ``(X, Y, Z)`` int16 label map of the method's own labels, as
  fitted, never relabelled with the ground truth. With class identity (the class order
  fixed by μ_data) it holds MyoPS codes (0, 500 blood, 200 myocardium, 1220 edema,
  2221 scar); without, the clusters numbered 1..K (``"cluster k"``). Slices that were not
  segmented are 0.
- ``<case>_prob.nii.gz``: ``(X, Y, Z, K)`` float32 probabilities of the method's own
  components, in the same order, 0 outside the segmented ROI.
- ``<case>_seg_matched.nii.gz``, ``<case>_prob_matched.nii.gz``: only when a matching rule
  other than ``"none"`` is asked for: the maps after the evaluation step assigned the
  clusters to the classes with the ground truth as an oracle
  (:mod:`deepgmm.evaluate.scoring`); MyoPS codes and class-ordered probabilities.
- ``results.csv``: one row per slice (:data:`deepgmm.report.tables.RESULT_COLUMNS`).
- ``cases.csv``: clinical measures per case (volumes in mL, scar and edema burden, and
  with ground truth the same from the truth plus the 3-D Dice of scar and edema ∪ scar;
  :mod:`deepgmm.report.clinical`); also in ``summary.json`` under ``clinical``.
- ``report.html``: one self-contained page with all of the above
  (:mod:`deepgmm.report.html`); ``deepgmm report OUT`` rebuilds it.
- ``run.json``: provenance (command line, resolved options, seeds, versions, device,
  SHA-256 of the inputs, times; :mod:`deepgmm.report.provenance`).
- ``summary.json``: means over slices (:func:`deepgmm.report.tables.summarize`), plus
  ``class_order`` (``"mu_data"`` or ``"clusters"``) and ``maps``: for every file name
  pattern, what it holds (``labels``: ``"as fitted"`` or the matching rule that produced
  it; ``values``: label value -> name, or ``channels``: channel names).
- ``figures/<case>_slice<z>.png``: sequences, the scored prediction (matched when a rule
  was asked for) and truth side by side.
- Label tables beside every label map (``<stem>.tsv`` as BIDS defines it, an ITK-SNAP
  label description ``<stem>.itksnap.txt``, a 3D Slicer colour table ``<stem>.ctbl``), a
  ``<stem>.json`` naming the class of each volume beside every probability map, and
  ``dseg.tsv``: the table of the own label maps (:mod:`deepgmm.report.labeltables`).

``naming="bids"`` names the maps with BIDS suffixes instead (``_dseg``, ``_probseg``,
``_desc-matched_``; :mod:`deepgmm.report.naming`); ``summary.json`` records the scheme
under ``naming``.

- ``cases/<case>/``: only after a per-case run (``--workers``, ``--scheduler``,
  ``--resume``; :mod:`deepgmm.cohort`): each case's own output folder of the same layout,
  plus the arrays the merge reads and the manifest ``--resume`` checks.

All NIfTI files carry the input's affine (qform and sform) so they overlay the input.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from deepgmm._atomic import atomic_dir
from deepgmm.anatomy import is_anatomy_rule
from deepgmm.errors import InputError
from deepgmm.evaluate.matching import check_rule
from deepgmm.evaluate.scoring import BatchScores, hard_labels, score_batch
from deepgmm.output_paths import check_output_folder
from deepgmm.report.clinical import CASE_COLUMNS, CASES_CSV, case_measures, csv_rows, json_measures
from deepgmm.report.figures import entropy_map, slice_figure
from deepgmm.report.html import REPORT_HTML, render_report
from deepgmm.report.labeltables import (
    bids_tsv,
    class_labels,
    label_sidecar_names,
    map_labels,
    probseg_sidecar_name,
    write_label_sidecars,
    write_probseg_sidecar,
)
from deepgmm.report.naming import NAMINGS, MapNames, map_names
from deepgmm.report.provenance import RUN_JSON, run_record
from deepgmm.report.tables import (
    ASSD_COLUMNS,
    RESULT_COLUMNS,
    class_means,
    slice_rows,
    summarize,
    write_csv,
    write_json,
)
from deepgmm.types import CLASS_NAMES, CLASS_TO_MYOPS, CaseVolume, SegmentationResult, SliceBatch

SEG_SUFFIX = NAMINGS["deepgmm"].seg
PROB_SUFFIX = NAMINGS["deepgmm"].prob
SEG_MATCHED_SUFFIX = NAMINGS["deepgmm"].seg_matched
PROB_MATCHED_SUFFIX = NAMINGS["deepgmm"].prob_matched
DSEG_TSV = "dseg.tsv"
RESULTS_CSV = "results.csv"
SUMMARY_JSON = "summary.json"
CASES_DIR = "cases"
"""``OUT/cases/<case>/``: one case's own output folder in a per-case run
(:mod:`deepgmm.cohort`); kept when the merged outputs around it are rewritten."""


def _numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def labels_to_codes(labels: np.ndarray) -> np.ndarray:
    """Class indices 0..4 -> MyoPS codes, int16, same shape."""
    return np.asarray(CLASS_TO_MYOPS, dtype=np.int16)[np.asarray(labels, dtype=np.int64)]


def own_labels_to_values(labels: np.ndarray, class_identity: bool) -> np.ndarray:
    """Own labels 0..K -> the values of ``<case>_seg.nii.gz``, int16: MyoPS codes with
    class identity, the labels themselves (clusters 1..K) without."""
    if class_identity:
        return labels_to_codes(labels)
    return np.asarray(labels, dtype=np.int16)


def label_tables(class_identity: bool, matching: str,
                 names: MapNames = NAMINGS["deepgmm"], *, anatomy: str = "none",
                 fused: bool = False) -> dict[str, Any]:
    """The ``maps`` entry of ``summary.json``: what every written map holds.

    Args:
        class_identity: whether the own components are the classes in order (μ_data).
        matching: the rule of the matched maps (``"none"``: no matched maps).
        names: the naming scheme of the maps.
        anatomy: the rule the own label maps follow (``"lv"``: ``"anatomy rule lv"``,
            ``"lv-dice"``: ``"anatomy rule lv-dice"``;
            ``"none"``: ``"as fitted"``, each pixel's most likely component).
        fused: the own probabilities were fused with the labelled class Gaussians
            (``"fused with labelled class Gaussians"``; else ``"as fitted"``).

    Returns:
        file pattern -> ``{"labels": "as fitted" | rule, "values" | "channels": ...}``;
        label values are JSON keys (strings).
    """
    k = len(CLASS_NAMES)
    codes = {str(c): n for c, n in zip(CLASS_TO_MYOPS, ("background", *CLASS_NAMES),
                                       strict=True)}
    clusters = [f"cluster {i}" for i in range(1, k + 1)]
    own_values = codes if class_identity else {"0": "background", **{
        str(i): name for i, name in enumerate(clusters, start=1)}}
    maps: dict[str, Any] = {
        names.pattern(names.seg): {"labels": f"anatomy rule {anatomy}"
                                   if is_anatomy_rule(anatomy) else "as fitted",
                                   "values": own_values},
        names.pattern(names.prob): {"labels": "fused with labelled class Gaussians"
                                    if fused else "as fitted",
                                 "channels": list(CLASS_NAMES) if class_identity
                                 else clusters},
    }
    if matching != "none":
        maps[names.pattern(names.seg_matched)] = {"labels": matching, "values": codes}
        maps[names.pattern(names.prob_matched)] = {"labels": matching,
                                                "channels": list(CLASS_NAMES)}
    return maps


def check_output_dir(out_dir: Path, inputs: Sequence[str | os.PathLike[str]]) -> Path:
    """Refuse output folders that would replace inputs or foreign data.

    The folder is replaced as a whole, so it must not be, contain or lie inside an input,
    and an existing non-empty folder must hold only files deepgmm wrote there (its
    manifest lists them; :func:`deepgmm.output_paths.check_output_folder`).

    Raises:
        InputError: naming the folder and the reason.
    """
    if Path(out_dir).is_dir() and _is_cohort_in_progress(Path(out_dir).expanduser().resolve()):
        return check_output_folder(out_dir, inputs, replace=False)  # its cases are kept
    return check_output_folder(out_dir, inputs)


def _is_cohort_in_progress(out: Path) -> bool:
    """A folder holding only ``cases/`` (and hidden temporary entries): a per-case run that
    has not merged its outputs yet."""
    visible = [p.name for p in out.iterdir() if not p.name.startswith(".")]
    return visible == [CASES_DIR] and (out / CASES_DIR).is_dir()


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


def case_map_files(case_id: str, names: MapNames, *, matched: bool) -> list[str]:
    """The files :func:`write_segmentation` writes for one case: its own label and
    probability maps, with ``matched`` the matched ones too, and each map's sidecars."""
    suffixes = [(names.seg, names.prob)]
    if matched:
        suffixes.append((names.seg_matched, names.prob_matched))
    files = []
    for seg_suffix, prob_suffix in suffixes:
        seg, prob = f"{case_id}{seg_suffix}", f"{case_id}{prob_suffix}"
        files += [seg, prob, *label_sidecar_names(seg), probseg_sidecar_name(prob)]
    return files


def _volume_maps(labels: np.ndarray, probs: np.ndarray, rows: Sequence[int],
                 slices: Sequence[int], origins: np.ndarray, shape: tuple[int, int, int],
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Put the batch rows ``rows`` of ``labels (B, H, W)`` and ``probs (B, K, H, W)``
    back on their volume grid: ``(X, Y, Z)`` labels and ``(X, Y, Z, K)`` probabilities."""
    from deepgmm.data.slices import uncrop

    x, y, z = shape
    seg = np.zeros((x, y, z), dtype=labels.dtype)
    prob = np.zeros((x, y, z, probs.shape[1]), dtype=np.float32)
    for b, k in zip(rows, slices, strict=True):
        origin = (int(origins[b, 0]), int(origins[b, 1]))
        seg[:, :, k] = uncrop(labels[b], origin, (x, y), fill=0)
        prob[:, :, k, :] = np.moveaxis(uncrop(probs[b], origin, (x, y), fill=0), 0, -1)
    return seg, prob


def is_predicted_roi(roi_source: Mapping[str, Any] | None) -> bool:
    """Whether an ROI record (:meth:`deepgmm.roi.source.RoiSource.as_dict`, or the ``roi``
    entry of ``summary.json``) is a network's prediction (``auto``) rather than the ground
    truth's LV or a given mask."""
    return isinstance(roi_source, Mapping) and roi_source.get("roi") == "auto"


def score_slices(volumes: Sequence[CaseVolume], batch: SliceBatch,
                 result: SegmentationResult, matching: str, *,
                 metrics: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
                 anatomy: str = "none", class_identity: bool = False,
                 predicted_roi: bool = False) -> BatchScores:
    """The evaluation :func:`write_segmentation` writes: ``result`` matched and scored
    against ``batch.labels`` with the slices' spacing (the volumes' zooms for a hand-made
    batch without one); ``metrics``, ``anatomy`` and ``class_identity`` as
    :func:`deepgmm.evaluate.scoring.score_batch`'s (``metrics`` ignored without ground
    truth); ``predicted_roi``: the slices' ROI is a prediction (``--roi auto``).

    Raises:
        InputError: as :func:`write_segmentation` (inputs that do not belong together,
            a diverged fit, matching without ground truth).
    """
    by_id = _check_inputs(volumes, batch, result)
    roi = _numpy(batch.roi).astype(bool)
    truth = None if batch.labels is None else _numpy(batch.labels).astype(np.int64)
    spacing = np.asarray(batch.spacing, dtype=np.float64)
    if spacing.shape != (len(batch), 2):  # a hand-made batch: the volumes' zooms
        spacing = np.array([by_id[c].zooms[:2] for c in batch.case_ids], dtype=np.float64)
    resp = _numpy(result.responsibilities).astype(np.float32, copy=False)
    return score_batch(resp, roi, truth, spacing, matching, anatomy=anatomy,
                       class_identity=class_identity,
                       metrics=metrics if truth is not None else None,
                       predicted_roi=predicted_roi)


def write_segmentation(out_dir: str | os.PathLike[str], volumes: Sequence[CaseVolume],
                       batch: SliceBatch, result: SegmentationResult, *,
                       matching: str = "hungarian", figures: bool = True,
                       progress: bool = True, class_identity: bool = False,
                       roi_source: Mapping[str, Any] | None = None,
                       naming: str = "deepgmm",
                       run_options: Mapping[str, Any] | None = None,
                       anatomy: str = "none",
                       summary_extra: Mapping[str, Any] | None = None,
                       before_commit: Callable[[Path], None] | None = None,
                       metrics: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
                       maps_from: Mapping[str, Path] | None = None,
                       report: bool = True, announce_replaced: bool = True,
                       ) -> dict[str, Any]:
    """Write the method's own maps, the matched maps (when asked), tables and figures.

    The own maps (``<case>_seg.nii.gz``, ``<case>_prob.nii.gz``) are the fit as it came
    out; the evaluation step (:func:`deepgmm.evaluate.scoring.score_batch`) matches the
    clusters to the classes with ``matching`` and scores, and its relabelled maps are
    written beside them as ``<case>_seg_matched.nii.gz`` / ``<case>_prob_matched.nii.gz``.

    Args:
        out_dir: the output folder; replaced as a whole once everything is written.
        volumes: the cases the batch was cut from (grids, affines).
        batch: the segmented slices: roi ``(B, H, W)``, labels ``(B, H, W)`` or None,
            image ``(B, M, H, W)`` (for figures), crop origins, slice indices, spacing.
        result: responsibilities ``(B, K, H, W)`` with K = 4, nll/n_iter/seconds ``(B,)``.
        matching: ``"hungarian"``, ``"greedy"`` (both need ``batch.labels``) or ``"none"``
            (score the own labels, component k as class k + 1).
        figures: write ``figures/<case>_slice<z>.png``.
        progress: show a progress bar.
        class_identity: the components are the classes in order (μ_data fixed the order):
            the own label map then holds MyoPS codes, else clusters 1..K.
        roi_source: where the ROI came from (:meth:`deepgmm.roi.source.RoiSource.as_dict`:
            ``roi`` = ``gt`` / ``auto`` / ``folder``, ``roi_path``, ``roi_skipped``), added to
            ``summary.json`` and as the ``roi`` column of ``results.csv``; ``None``: the
            ROI given with the volumes (``roi`` = ``given``).
        naming: ``"deepgmm"`` or ``"bids"`` file names (:mod:`deepgmm.report.naming`).
        run_options: resolved options for ``run.json`` beyond the command's own (e.g. the
            method's options, a trained run's settings; ``precision`` and ``seed`` keys
            are recorded as such).
        anatomy: how label maps come from the probabilities (:mod:`deepgmm.anatomy`):
            ``"none"`` (most likely class), ``"lv"`` (one convex blood pool, a smooth
            wall) or ``"lv-dice"`` (the same, the wall labelled for the largest expected
            Dice), for the matched maps and, with ``class_identity``, the own maps; the
            probability maps are written as fitted. Recorded in ``summary.json``:
            ``anatomy`` (the rule asked for: the matched maps, and any re-matching by
            ``deepgmm evaluate``, follow it) and ``anatomy_own_maps`` (``"none"`` where the
            class order is unknown).
        summary_extra: entries added to ``summary.json`` (e.g. a per-case run's
            ``failed_cases``).
        before_commit: called with the temporary folder once the maps, tables and figures
            are in it, before ``report.html`` is rendered and the folder renamed into place
            (a per-case run adds its arrays and manifest, or the merge its figures). An
            existing ``cases/`` folder of ``out_dir`` is kept.
        metrics: the batch's ``(dice, hd95, assd)``, each ``(B, C)``, computed before
            (:func:`deepgmm.evaluate.scoring.score_batch`'s ``metrics``); a per-case run's
            merge passes its cases' own instead of computing them again.
        maps_from: case id -> a folder where this case's maps and their sidecars were
            already written from the same slices, result, matching, class order and
            naming (a per-case run's case folders); they are copied from there, not
            written again (the bytes are the same). Cases not listed are written.
        report: render ``report.html`` (False: a per-case run's case folders, whose cases
            the merged report shows; ``deepgmm report`` renders one on demand).
        announce_replaced: warn when an earlier output is replaced (False: a per-case
            run's case folders, whose replacement the merged output announces).

    Returns:
        The summary dict written to ``summary.json``.

    Raises:
        InputError: matching without ground truth, mismatched inputs, or an output folder
            that would replace inputs or foreign data.
    """
    from deepgmm.data.nifti import save_nifti

    check_rule(matching)
    names = map_names(naming)
    if matching != "none" and batch.labels is None:
        raise InputError(f"matching {matching!r} needs ground-truth labels, but the input "
                         "has none; use matching 'none'")
    by_id = _check_inputs(volumes, batch, result)
    roi_info = dict(roi_source) if roi_source is not None else {"roi": "given"}
    out = check_output_dir(Path(out_dir), [v.source for v in volumes])

    roi = _numpy(batch.roi).astype(bool)
    truth = None if batch.labels is None else _numpy(batch.labels).astype(np.int64)
    n_b = len(batch)
    resp = _numpy(result.responsibilities).astype(np.float32, copy=False)
    own_probs = hard_labels(resp, roi)[0]
    scores = score_slices(volumes, batch, result, matching, metrics=metrics, anatomy=anatomy,
                          class_identity=class_identity,
                          predicted_roi=is_predicted_roi(roi_info))
    own_labels = scores.own_labels

    nll = _numpy(result.nll).astype(np.float64).reshape(n_b)
    n_iter = _numpy(result.n_iter).astype(np.int64).reshape(n_b)
    seconds = _numpy(result.seconds).astype(np.float64).reshape(n_b)
    assd = (np.full((n_b, len(CLASS_NAMES)), None, dtype=object) if scores.assd is None
            else scores.assd)
    assd_cells = {col: [None if v is None else float(v) for v in assd[:, k]]
                  for k, col in enumerate(ASSD_COLUMNS)}
    rows = slice_rows(batch.case_ids, batch.slice_indices, dice=scores.dice,
                      hd95=scores.hd95,
                      extra={**assd_cells, "method": [result.method] * n_b, "nll": list(nll),
                             "iterations": [int(i) for i in n_iter],
                             "seconds": list(seconds), "matching": [matching] * n_b,
                             "roi": [roi_info["roi"]] * n_b})
    summary = summarize(method=result.method, matching=matching, dice=scores.dice,
                        hd95=scores.hd95, nll=nll, seconds=seconds, n_slices=n_b)
    summary["assd"] = class_means(scores.assd)[0]
    summary["class_order"] = "mu_data" if class_identity else "clusters"
    summary["anatomy"] = anatomy  # the rule asked for (evaluate re-matches under it)
    summary["anatomy_own_maps"] = anatomy if class_identity else "none"
    summary.update(roi_info)
    summary["maps"] = label_tables(
        class_identity, matching, names, anatomy=summary["anatomy_own_maps"],
        fused=class_identity and (run_options or {}).get("fusion") == "labelled")
    summary["naming"] = names.scheme
    summary.update(summary_extra or {})
    scored_as = (f"matched ({matching})" if matching != "none" else
                 "as fitted (class order from mu_data)" if class_identity else
                 "as fitted (cluster k as class k)")
    measures = case_measures(batch.case_ids, scores.scored_labels, truth,
                             {c: v.zooms for c, v in by_id.items()}, scored_as)
    summary["clinical"] = json_measures(measures)
    own_table = map_labels(class_identity)
    own_channels = [lb.abbreviation for lb in own_table[1:]]
    class_channels = [lb.abbreviation for lb in class_labels()[1:]]

    case_order = list(dict.fromkeys(batch.case_ids))
    origins = np.asarray(batch.crop_origins, dtype=np.int64).reshape(n_b, 2)
    image = _numpy(batch.image) if figures else None
    n_steps = len(case_order) + (n_b if figures else 0)
    matched = scores.matched_labels is not None and scores.matched_probs is not None
    with atomic_dir(out, keep=(CASES_DIR,), announce=announce_replaced) as tmp, tqdm(
            total=n_steps, desc="writing outputs", unit="file", disable=not progress,
            leave=False) as bar:
        for cid in case_order:
            if maps_from is not None and cid in maps_from:
                for name in case_map_files(cid, names, matched=matched):
                    shutil.copyfile(Path(maps_from[cid]) / name, tmp / name)
                bar.update(1)
                continue
            vol = by_id[cid]
            rows_b = [i for i, c in enumerate(batch.case_ids) if c == cid]
            zs = [int(batch.slice_indices[b]) for b in rows_b]
            seg, prob = _volume_maps(own_labels, own_probs, rows_b, zs, origins, vol.shape)
            seg_path, prob_path = tmp / f"{cid}{names.seg}", tmp / f"{cid}{names.prob}"
            save_nifti(own_labels_to_values(seg, class_identity), vol.affine, seg_path)
            save_nifti(prob, vol.affine, prob_path)
            write_label_sidecars(seg_path, own_table)
            write_probseg_sidecar(prob_path, own_channels)
            if matched:
                seg, prob = _volume_maps(scores.matched_labels, scores.matched_probs, rows_b,
                                         zs, origins, vol.shape)
                seg_path = tmp / f"{cid}{names.seg_matched}"
                prob_path = tmp / f"{cid}{names.prob_matched}"
                save_nifti(labels_to_codes(seg), vol.affine, seg_path)
                save_nifti(prob, vol.affine, prob_path)
                write_label_sidecars(seg_path, class_labels())
                write_probseg_sidecar(prob_path, class_channels)
            bar.update(1)
        (tmp / DSEG_TSV).write_text(bids_tsv(own_table), encoding="utf-8")
        write_csv(tmp / RESULTS_CSV, rows, RESULT_COLUMNS)
        write_csv(tmp / CASES_CSV, csv_rows(measures), CASE_COLUMNS)
        opts = dict(run_options or {})
        write_json(tmp / RUN_JSON, run_record(
            case_order, options=opts, precision=opts.get("precision"),
            seeds={k: v for k, v in opts.items() if "seed" in k}))
        write_json(tmp / SUMMARY_JSON, summary)
        if image is not None:
            (tmp / "figures").mkdir()
            shown = "matched" if matching != "none" else "as fitted"
            entropy = entropy_map(own_probs)  # permutation-invariant: same for matched
            for b in range(n_b):
                cid, k = batch.case_ids[b], int(batch.slice_indices[b])
                slice_figure(tmp / "figures" / f"{cid}_slice{k}.png", image[b],
                             batch.sequences, scores.scored_labels[b],
                             None if truth is None else truth[b],
                             title=f"case {cid}, slice {k}, {result.method} ({shown})",
                             uncertainty=entropy[b])
                bar.update(1)
        if before_commit is not None:
            before_commit(tmp)
        if report:
            render_report(tmp, tmp / REPORT_HTML, shown_as=out)
    return summary
