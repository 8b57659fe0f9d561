"""Clinical measures per case: tissue volumes in mL, scar and edema burden, and the MyoPS
challenge's per-case 3-D Dice scores.

Computed on the segmented slices of each case (the slices of ``results.csv``), from the
label map that was scored (matched when a rule was asked for, else the own labels taken
as classes) and, with ground truth, from the truth on the same slices:

- ``<class>_ml``: voxels of the class x voxel volume (``dx * dy * dz`` mm^3) / 1000.
- ``lv_myocardium_ml``: healthy myocardium + edema + scar.
- ``scar_pct``, ``edema_pct``: scar and edema as a percentage of the LV myocardium (empty
  without LV myocardium).
- ``gt_*``: the same from the ground truth.
- ``dice3d_scar``, ``dice3d_edema_scar``: Dice of scar and of edema ∪ scar over all the
  case's segmented slices at once (the MyoPS 2020 scores); NaN when both maps lack it.

Shapes: B slices, H x W crops, N cases.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from deepgmm.types import CLASS_NAMES

N_LABELS = len(CLASS_NAMES) + 1
VOLUME_COLUMNS: tuple[str, ...] = (*(f"{n}_ml" for n in CLASS_NAMES), "lv_myocardium_ml",
                                   "scar_pct", "edema_pct")
CASE_COLUMNS: tuple[str, ...] = (
    "case", "n_slices", "labels", "voxel_ml", *VOLUME_COLUMNS,
    *(f"gt_{c}" for c in VOLUME_COLUMNS), "dice3d_scar", "dice3d_edema_scar")
"""Columns of ``cases.csv``, one row per case."""
CASES_CSV = "cases.csv"


def label_counts(labels: np.ndarray) -> np.ndarray:
    """``(B, 5)`` voxel count of each class index 0..4 on each slice of ``(B, H, W)``."""
    labels = np.asarray(labels, dtype=np.int64)
    n_b = labels.shape[0]
    flat = labels.reshape(n_b, -1) + N_LABELS * np.arange(n_b)[:, None]
    return np.bincount(flat.ravel(), minlength=n_b * N_LABELS).reshape(n_b, N_LABELS)


def _per_case(values: np.ndarray, case_index: np.ndarray, n_cases: int) -> np.ndarray:
    """Sum the rows of ``values (B, ...)`` per case: ``(N, ...)``."""
    out = np.zeros((n_cases, *values.shape[1:]), dtype=np.float64)
    np.add.at(out, case_index, values)
    return out


def volumes_from_counts(counts: np.ndarray, voxel_ml: np.ndarray) -> np.ndarray:
    """``(N, 7)`` measures of :data:`VOLUME_COLUMNS` from ``(N, 5)`` class voxel counts and
    ``(N,)`` voxel volumes in mL."""
    ml = counts[:, 1:] * voxel_ml[:, None]                                 # (N, 4)
    lv = ml[:, 1:].sum(axis=1)                                             # myo+edema+scar
    with np.errstate(invalid="ignore", divide="ignore"):
        scar_pct = np.where(lv > 0, 100.0 * ml[:, 3] / lv, np.nan)
        edema_pct = np.where(lv > 0, 100.0 * ml[:, 2] / lv, np.nan)
    return np.column_stack([ml, lv, scar_pct, edema_pct])


def _dice(inter: np.ndarray, size_p: np.ndarray, size_t: np.ndarray) -> np.ndarray:
    total = size_p + size_t
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, 2.0 * inter / total, np.nan)


def case_measures(case_ids: Sequence[str], pred: np.ndarray, truth: np.ndarray | None,
                  zooms: Mapping[str, Sequence[float]], labels: str) -> list[dict[str, Any]]:
    """Clinical measures of every case of a batch.

    Args:
        case_ids: length-B case id of each slice.
        pred: ``(B, H, W)`` class indices 0..4 that were scored.
        truth: ``(B, H, W)`` true class indices, or None.
        zooms: case id -> voxel spacing ``(dx, dy, dz)`` in mm.
        labels: what ``pred`` holds (e.g. ``"matched (hungarian)"``), for the table.

    Returns:
        One dict per case (first-appearance order) with the keys of :data:`CASE_COLUMNS`;
        floats (NaN where undefined), None for the truth columns without truth.
    """
    order = list(dict.fromkeys(case_ids))
    index = np.array([order.index(c) for c in case_ids], dtype=np.int64)
    n = len(order)
    voxel_ml = np.array([float(np.prod(zooms[c][:3])) / 1000.0 for c in order])
    n_slices = np.bincount(index, minlength=n)
    pred = np.asarray(pred, dtype=np.int64)
    measures = volumes_from_counts(_per_case(label_counts(pred), index, n), voxel_ml)
    gt = dice_scar = dice_es = None
    if truth is not None:
        truth = np.asarray(truth, dtype=np.int64)
        gt = volumes_from_counts(_per_case(label_counts(truth), index, n), voxel_ml)
        p_s, t_s = pred == 4, truth == 4
        p_es, t_es = pred >= 3, truth >= 3
        per_slice = np.stack([(p_s & t_s).sum((1, 2)), p_s.sum((1, 2)), t_s.sum((1, 2)),
                              (p_es & t_es).sum((1, 2)), p_es.sum((1, 2)), t_es.sum((1, 2))],
                             axis=1)                                       # (B, 6)
        s = _per_case(per_slice, index, n)
        dice_scar, dice_es = _dice(s[:, 0], s[:, 1], s[:, 2]), _dice(s[:, 3], s[:, 4], s[:, 5])
    rows = []
    for i, cid in enumerate(order):
        row: dict[str, Any] = {"case": cid, "n_slices": int(n_slices[i]), "labels": labels,
                               "voxel_ml": float(voxel_ml[i])}
        row.update(zip(VOLUME_COLUMNS, measures[i].tolist(), strict=True))
        row.update(zip((f"gt_{c}" for c in VOLUME_COLUMNS),
                       [None] * len(VOLUME_COLUMNS) if gt is None else gt[i].tolist(),
                       strict=True))
        row["dice3d_scar"] = None if dice_scar is None else float(dice_scar[i])
        row["dice3d_edema_scar"] = None if dice_es is None else float(dice_es[i])
        rows.append(row)
    return rows


def csv_rows(measures: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """The rows of :func:`case_measures` as ``cases.csv`` cells (empty for None)."""
    from deepgmm.report.tables import _cell

    return [{k: _cell(v) if isinstance(v, float) or v is None else str(v)
             for k, v in row.items()} for row in measures]


def json_measures(measures: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """case id -> measures for ``summary.json`` (``null`` for NaN / missing)."""
    import math

    def clean(v: Any) -> Any:
        return None if isinstance(v, float) and not math.isfinite(v) else v

    return {row["case"]: {k: clean(v) for k, v in row.items() if k != "case"}
            for row in measures}


def format_measures(clinical: Mapping[str, Mapping[str, Any]]) -> str:
    """Plain aligned text: one line per case with the volumes (mL), burden (%) and, with
    ground truth, the 3-D Dice of scar and edema ∪ scar."""

    def fmt(v: Any, spec: str) -> str:
        return "-" if v is None else format(v, spec)

    head = (f"{'case':<10}{'blood':>8}{'myo':>8}{'edema':>8}{'scar':>8}{'LV myo':>8}"
            f"{'scar%':>7}{'edema%':>7}{'gt scar%':>9}{'gt ed%':>7}{'D scar':>7}{'D e+s':>7}")
    lines = ["volumes in mL (LV myocardium = myocardium + edema + scar); 3-D Dice per case",
             head]
    for cid, m in clinical.items():
        lines.append(
            f"{cid:<10}{fmt(m['blood_ml'], '.2f'):>8}{fmt(m['myocardium_ml'], '.2f'):>8}"
            f"{fmt(m['edema_ml'], '.2f'):>8}{fmt(m['scar_ml'], '.2f'):>8}"
            f"{fmt(m['lv_myocardium_ml'], '.2f'):>8}{fmt(m['scar_pct'], '.1f'):>7}"
            f"{fmt(m['edema_pct'], '.1f'):>7}{fmt(m['gt_scar_pct'], '.1f'):>9}"
            f"{fmt(m['gt_edema_pct'], '.1f'):>7}{fmt(m['dice3d_scar'], '.3f'):>7}"
            f"{fmt(m['dice3d_edema_scar'], '.3f'):>7}")
    return "\n".join(lines)
