"""``deepgmm evaluate ROOT --out OUT``: recompute Dice/HD95 of saved label maps."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from deepgmm.cli import command
from deepgmm.commands._options import MULTI_VALUE_CONTEXT, patient_list


@command("evaluate", context_settings=MULTI_VALUE_CONTEXT)
def evaluate(
    ctx: typer.Context,
    root: Annotated[Path, typer.Argument(help="MyoPS-style data folder with the _gd files.")],
    out_dir: Annotated[Path, typer.Option(
        "--out", "-o", help="Output folder of a segmenting command (read; evaluation.csv "
        "and evaluation.json are written into it).")],
    patients: Annotated[list[str] | None, typer.Option(
        "--patients", help="Evaluate only these case ids (e.g. --patients 109 114).")] = None,
    matching: Annotated[str | None, typer.Option(
        "--matching", help="Assign the clusters of the saved probability maps to the classes "
        "afresh: hungarian, greedy or none (default: use the saved label maps as written).")
    ] = None,
    roi: Annotated[str | None, typer.Option(
        "--roi", help="Also score every slice the run did not segment where this ROI is not "
        "empty, as predicted background: gt (the ground truth's left ventricle), auto "
        "(predicted by --roi-run) or a folder of <case>_roi.nii.gz masks (default: only the "
        "slices in results.csv).")] = None,
    roi_run: Annotated[Path | None, typer.Option(
        "--roi-run", help="ROI run folder (from `deepgmm roi train`) for --roi auto.")] = None,
) -> None:
    """Recompute Dice and HD95 of saved label maps against the ground truth.

    Reads OUT/<case>_seg.nii.gz, compares with the _gd files below ROOT, prints a Dice
    table and writes OUT/evaluation.csv and OUT/evaluation.json. With --matching, e.g. the
    Hungarian figures of a run written with the greedy rule, from OUT/<case>_prob.nii.gz.
    With --roi, the slices of that ROI the run did not segment are scored too (e.g. the
    ground truth's left-ventricle slices an ROI network missed).
    """
    from deepgmm.evaluate.recompute import EVALUATION_CSV, EVALUATION_JSON, evaluate_outputs
    from deepgmm.report.tables import format_dice_table

    summary = evaluate_outputs(out_dir, root, patient_list(ctx, patients), matching=matching,
                               roi=roi, roi_run=roi_run)
    typer.echo(format_dice_table(summary))
    typer.echo(f"wrote {out_dir / EVALUATION_CSV} and {out_dir / EVALUATION_JSON}")
