"""Per-slice result tables (CSV) and their summaries (JSON), plus a plain-text Dice table.

Shapes: B slices, C = 4 foreground classes (``deepgmm.types.CLASS_NAMES`` order).
Missing values: Dice/HD95 cells are empty when there is no ground truth; a class absent
from both prediction and truth is ``nan``, an HD95 with the class in only one map ``inf``.
Summaries average Dice with ``nanmean`` and HD95 over its finite values; JSON holds
``null`` where no value exists.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from deepgmm._atomic import atomic_path
from deepgmm.types import CLASS_NAMES

DICE_COLUMNS: tuple[str, ...] = tuple(f"dice_{n}" for n in CLASS_NAMES)
HD95_COLUMNS: tuple[str, ...] = tuple(f"hd95_{n}" for n in CLASS_NAMES)
ASSD_COLUMNS: tuple[str, ...] = tuple(f"assd_{n}" for n in CLASS_NAMES)
RESULT_COLUMNS: tuple[str, ...] = ("case", "slice", "method", *DICE_COLUMNS, *HD95_COLUMNS,
                                   *ASSD_COLUMNS, "nll", "iterations", "seconds", "matching",
                                   "roi")
"""Columns of ``results.csv``, one row per segmented slice."""
EVALUATION_COLUMNS: tuple[str, ...] = ("case", "slice", *DICE_COLUMNS, *HD95_COLUMNS)
"""Columns of ``evaluation.csv`` (metrics recomputed from saved label maps)."""


def _cell(value: float | None) -> str:
    """Format a number for CSV: empty for None, ``nan``/``inf`` spelled out."""
    if value is None:
        return ""
    value = float(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return repr(value)


def _json_number(value: float) -> float | None:
    """A float for JSON, None (``null``) when it is NaN or infinite."""
    value = float(value)
    return value if math.isfinite(value) else None


def slice_rows(case_ids: Sequence[str], slice_indices: Sequence[int], *,
               dice: np.ndarray | None, hd95: np.ndarray | None,
               extra: Mapping[str, Sequence[Any]] | None = None) -> list[dict[str, str]]:
    """Rows of a per-slice table.

    Args:
        case_ids: length-B case ids.
        slice_indices: length-B slice index along Z.
        dice: ``(B, C)`` Dice or None without ground truth (cells left empty).
        hd95: ``(B, C)`` HD95 in mm or None without ground truth.
        extra: further columns, each a length-B sequence (method, nll, iterations...);
            floats are formatted like the metrics, everything else with ``str``.

    Returns:
        B dicts from column name to the CSV text of the cell.
    """
    n_b = len(case_ids)
    empty = np.full((n_b, len(CLASS_NAMES)), None, dtype=object)
    dice_v = empty if dice is None else np.asarray(dice, dtype=np.float64)
    hd_v = empty if hd95 is None else np.asarray(hd95, dtype=np.float64)
    dice_cells = [[_cell(v) for v in row] for row in dice_v.tolist()]
    hd_cells = [[_cell(v) for v in row] for row in hd_v.tolist()]
    extra = extra or {}
    rows: list[dict[str, str]] = []
    for i in range(n_b):
        row = {"case": str(case_ids[i]), "slice": str(int(slice_indices[i]))}
        row.update(zip(DICE_COLUMNS, dice_cells[i], strict=True))
        row.update(zip(HD95_COLUMNS, hd_cells[i], strict=True))
        for name, values in extra.items():
            v = values[i]
            row[name] = (_cell(v) if v is None or isinstance(v, float | np.floating)
                         else str(v))
        rows.append(row)
    return rows


def write_csv(path: str | os.PathLike[str], rows: Sequence[Mapping[str, str]],
              columns: Sequence[str]) -> Path:
    """Write rows as CSV with a header line, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="raise")
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_json(path: str | os.PathLike[str], data: Mapping[str, Any]) -> Path:
    """Write a dict as indented JSON (strict: no NaN), atomically."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, allow_nan=False)
        fh.write("\n")
    return path


def class_means(values: np.ndarray | None) -> tuple[dict[str, float | None],
                                                    dict[str, float | None]]:
    """Per-class mean and sample standard deviation over slices, ignoring NaN and inf.

    Args:
        values: ``(B, C)`` metric per slice and class, or None.

    Returns:
        Two dicts class name -> mean / SD (``ddof=1``; None with fewer than two values, and
        the mean None with no value).
    """
    names = CLASS_NAMES
    if values is None:
        return dict.fromkeys(names), dict.fromkeys(names)
    v = np.asarray(values, dtype=np.float64).reshape(-1, len(names))
    ok = np.isfinite(v)
    n = ok.sum(axis=0)
    vz = np.where(ok, v, 0.0)
    mean = np.divide(vz.sum(axis=0), n, out=np.full(len(names), np.nan), where=n > 0)
    sq = np.where(ok, (v - mean) ** 2, 0.0).sum(axis=0)
    sd = np.divide(sq, n - 1, out=np.full(len(names), np.nan), where=n > 1) ** 0.5
    return ({k: _json_number(m) for k, m in zip(names, mean, strict=True)},
            {k: _json_number(s) for k, s in zip(names, sd, strict=True)})


def summarize(*, method: str, matching: str, dice: np.ndarray | None,
              hd95: np.ndarray | None, nll: np.ndarray | None = None,
              seconds: np.ndarray | None = None, n_slices: int | None = None) -> dict[str, Any]:
    """The ``summary.json`` dict of a run.

    Args:
        method: method name.
        matching: label-matching rule used.
        dice: ``(B, C)`` Dice per slice and class, or None without ground truth.
        hd95: ``(B, C)`` HD95 per slice and class in mm, or None.
        nll: ``(B,)`` final NLL per slice, or None.
        seconds: ``(B,)`` wall time per slice, or None.
        n_slices: B when neither metrics nor nll are given.

    Returns:
        ``{"method", "n_slices", "matching", "dice": {class: mean}, "dice_sd": {class: sd},
        "hd95": {class: mean}, "nll", "seconds_per_slice"}``; ``null`` where undefined.
    """
    lengths = [len(a) for a in (dice, hd95, nll, seconds) if a is not None]
    b = int(n_slices if n_slices is not None else (lengths[0] if lengths else 0))
    dice_mean, dice_sd = class_means(dice)
    hd_mean, _ = class_means(hd95)

    def mean_or_none(x: np.ndarray | None) -> float | None:
        if x is None or len(x) == 0:
            return None
        x = np.asarray(x, dtype=np.float64)
        x = x[np.isfinite(x)]
        return _json_number(x.mean()) if x.size else None

    return {"method": method, "n_slices": b, "matching": matching, "dice": dice_mean,
            "dice_sd": dice_sd, "hd95": hd_mean, "nll": mean_or_none(nll),
            "seconds_per_slice": mean_or_none(seconds)}


def format_dice_table(summary: Mapping[str, Any]) -> str:
    """Plain aligned text: one line per class with Dice mean ± SD, mean HD95 (mm) and, when
    the summary has it, mean ASSD (mm)."""

    def fmt(v: float | None, spec: str) -> str:
        return "-" if v is None else format(v, spec)

    assd = summary.get("assd")
    lines = [f"{'class':<12}{'dice':>8}{'sd':>8}{'hd95 mm':>10}"
             + (f"{'assd mm':>10}" if assd else "")]
    for name in CLASS_NAMES:
        lines.append(f"{name:<12}{fmt(summary['dice'][name], '.3f'):>8}"
                     f"{fmt(summary['dice_sd'][name], '.3f'):>8}"
                     f"{fmt(summary['hd95'][name], '.2f'):>10}"
                     + (f"{fmt(assd[name], '.2f'):>10}" if assd else ""))
    lines.append(f"{summary.get('n_slices', 0)} slices, method {summary.get('method', '?')}, "
                 f"matching {summary.get('matching', '?')}")
    return "\n".join(lines)


def format_summary(summary: Mapping[str, Any]) -> str:
    """The Dice table of :func:`format_dice_table` plus mean NLL and seconds per slice."""

    def fmt(v: float | None, spec: str) -> str:
        return "-" if v is None else format(v, spec)

    return (f"{format_dice_table(summary)}\n"
            f"nll {fmt(summary.get('nll'), '.4f')}, "
            f"{fmt(summary.get('seconds_per_slice'), '.3f')} s per slice")
