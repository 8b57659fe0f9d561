"""``deepgmm report OUT``: rebuild ``report.html`` from the files of an output folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from deepgmm.cli import command


@command("report")
def report_command(
    out: Annotated[Path, typer.Argument(help="Output folder of a segmenting command, or a "
                                        "training run folder.")],
) -> None:
    """Rebuild OUT/report.html (summary, Dice per slice, clinical measures, slice panels,
    provenance) from the files in OUT."""
    from deepgmm._atomic import atomic_path
    from deepgmm.output_paths import add_to_manifest
    from deepgmm.report.html import REPORT_HTML, render_report

    target = Path(out) / REPORT_HTML
    if not Path(out).is_dir():
        from deepgmm.errors import InputError

        raise InputError(f"{str(out)!r} is not a folder")
    with atomic_path(target) as tmp:
        render_report(out, tmp)
    add_to_manifest(out, [REPORT_HTML], create=False)
    typer.echo(f"wrote {target}")
