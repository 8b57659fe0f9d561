"""``report.html``: one self-contained page per output folder (images embedded as data URIs).

Built from the files the folder already holds, so ``deepgmm report OUT`` can rebuild it:
``summary.json`` (summary table), ``results.csv`` (Dice per case and slice, drawn as a
chart), ``cases.csv`` (clinical measures), ``figures/*.png`` (per-slice panels: sequences,
prediction overlay, ground truth, uncertainty), ``run.json`` (provenance) and, in a
training run folder, ``training_curve.png``. Rendered with Jinja2 (autoescaped) from
``templates/report.html.j2``; the chart with matplotlib's Agg canvas.
"""

from __future__ import annotations

import base64
import csv
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from deepgmm.errors import InputError
from deepgmm.report.figures import CLASS_COLOURS
from deepgmm.types import CLASS_NAMES

REPORT_HTML = "report.html"
TEMPLATE = "report.html.j2"


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise InputError(f"cannot read {str(path)!r}: {err}") from err
    return data if isinstance(data, dict) else None


def _number(text: Any) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def dice_chart(rows: Sequence[Mapping[str, str]]) -> bytes | None:
    """PNG bytes of a grouped bar chart: Dice of each class on each ``case/slice`` (None
    when the rows hold no Dice)."""
    from io import BytesIO

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    dice = np.array([[_number(r.get(f"dice_{n}")) for n in CLASS_NAMES] for r in rows],
                    dtype=np.float64)  # None -> nan
    if dice.size == 0 or np.isnan(dice).all():
        return None
    n_b, n_c = dice.shape
    fig = Figure(figsize=(min(max(6.0, 2.0 + 0.45 * n_b), 16.0), 3.2))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    width = 0.8 / n_c
    x = np.arange(n_b)
    for k, (name, colour) in enumerate(zip(CLASS_NAMES, CLASS_COLOURS[1:], strict=True)):
        ax.bar(x + (k - (n_c - 1) / 2) * width, np.nan_to_num(dice[:, k]), width,
               label=name, color=colour, edgecolor="none")
    ax.set_xticks(x, [f"{r['case']}/{r['slice']}" for r in rows], rotation=90, fontsize=7)
    ax.set_ylim(0, 1.2)
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_ylabel("Dice")
    ax.set_xlabel("case / slice")
    ax.legend(ncol=n_c, fontsize=8, loc="upper center", frameon=False)
    fig.subplots_adjust(bottom=0.3, left=0.1, right=0.99, top=0.95)
    buf = BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _num(text: Any, spec: str) -> str:
    value = _number(text)
    return "-" if value is None else format(value, spec)


def render_report(folder: str | os.PathLike[str],
                  target: str | os.PathLike[str] | None = None, *,
                  shown_as: str | os.PathLike[str] | None = None) -> Path:
    """Render the report of an output or training-run folder.

    Args:
        folder: the folder whose files are reported.
        target: where to write the HTML (default ``folder/report.html``; written directly,
            callers wanting atomicity pass a temporary path).
        shown_as: the folder's name on the page (default ``folder``; the final name when
            ``folder`` is a temporary one about to be renamed).

    Returns:
        The written path.

    Raises:
        InputError: ``folder`` is not a folder, or holds nothing to report.
    """
    import jinja2

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{str(folder)!r} is not a folder")
    summary = _read_json(folder / "summary.json")
    run = _read_json(folder / "run.json")
    rows = _read_csv(folder / "results.csv")
    cases = _read_csv(folder / "cases.csv")
    curve_path = folder / "training_curve.png"
    if summary is None and run is None and not curve_path.is_file():
        raise InputError(f"{str(folder)!r} is not a deepgmm output or run folder (no "
                         "summary.json, run.json or training_curve.png)")
    chart = dice_chart(rows) if rows else None
    fig_dir = folder / "figures"
    panels = [(p.stem, _data_uri(p.read_bytes()))
              for p in sorted(fig_dir.glob("*.png"))] if fig_dir.is_dir() else []
    shown = Path(shown_as) if shown_as is not None else folder
    title = (f"deepgmm {summary['method']}: {shown.name}" if summary
             else f"deepgmm {(run or {}).get('command') or 'run'}: {shown.name}")
    env = jinja2.Environment(loader=jinja2.PackageLoader("deepgmm.report", "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    html = env.get_template(TEMPLATE).render(
        title=title, folder=str(shown), summary=summary, rows=rows, cases=cases, run=run,
        run_json=json.dumps(run, indent=2) if run else "",
        finished=(run or {}).get("finished"),
        classes=list(zip(CLASS_NAMES, CLASS_COLOURS[1:], strict=True)),
        dice_chart=_data_uri(chart) if chart else None,
        curve=_data_uri(curve_path.read_bytes()) if curve_path.is_file() else None,
        panels=panels, fmt=_fmt, num=_num)
    out = Path(target) if target is not None else folder / REPORT_HTML
    out.write_text(html, encoding="utf-8")
    return out
