"""``roi`` commands: ``roi train`` (an LV region-of-interest network from labelled cases) and
``roi predict`` (``<case>_roi.nii.gz`` masks for cases with or without ground truth)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from deepgmm.cli import app, command
from deepgmm.commands._options import MULTI_VALUE_CONTEXT, patient_list, split_ids

roi_app = typer.Typer(name="roi", no_args_is_help=True, add_completion=False,
                      help="The left-ventricle region of interest from the images: train a "
                      "small network on labelled cases, predict ROI masks for new ones.")
app.add_typer(roi_app, name="roi")

ProgressOpt = Annotated[bool, typer.Option("--progress/--no-progress",
                                           help="Show progress bars.")]
PatientsOpt = Annotated[list[str] | None, typer.Option(
    "--patients", help="Only these case ids, e.g. --patients 101 102 (default: all).")]


def _check_run_folder(out: Path) -> None:
    """Refuse a run folder that holds something other than an earlier ROI run."""
    from deepgmm.errors import InputError
    from deepgmm.roi.model import CONFIG_FILE, MODEL_FILE

    if out.exists() and not out.is_dir():
        raise InputError(f"--out {str(out)!r} exists and is not a folder")
    if out.is_dir():
        extra = sorted(p.name for p in out.iterdir() if p.name not in (CONFIG_FILE, MODEL_FILE))
        if extra:
            raise InputError(f"--out {str(out)!r} holds other files ({', '.join(extra[:3])}): "
                             f"choose a new folder or an earlier ROI run to replace")
        if (out / CONFIG_FILE).is_file():
            from deepgmm.roi.model import read_roi_config

            read_roi_config(out)  # refuses a folder that is not an ROI run


@command("train", group=roi_app, context_settings=MULTI_VALUE_CONTEXT)
def roi_train_command(
    ctx: typer.Context,
    root: Annotated[Path, typer.Argument(help="Labelled data (MyoPS layout: "
                                         "<prefix>_<n>_<sequence>.nii.gz and _gd.nii.gz).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="ROI run folder to write "
                                      "(model.safetensors, config.json).")],
    patients: PatientsOpt = None,
    exclude: Annotated[str | None, typer.Option(
        "--exclude", help="Comma list of case ids to leave out, e.g. the test patients "
        "109,114,117,120,122.")] = None,
    sequences: Annotated[str, typer.Option("--sequences", help="Sequence names in channel "
                                           "order (comma-separated).")] = "C0,DE,T2",
    epochs: Annotated[int, typer.Option("--epochs", help="Passes over the training "
                                        "slices.")] = 40,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the weights, the slice order "
                                      "and the augmentation.")] = 0,
    spacing: Annotated[float, typer.Option("--spacing", help="In-plane pixel size (mm) all "
                                           "slices are resampled to.")] = 2.0,
    crop: Annotated[int, typer.Option("--crop", help="Side in pixels of the centred window "
                                      "the network sees (crop x spacing mm must hold the "
                                      "heart).")] = 128,
    batch: Annotated[int, typer.Option("--batch", help="Slices per step.")] = 16,
    lr: Annotated[float, typer.Option("--lr", help="AdamW learning rate.")] = 3e-3,
    augment: Annotated[bool, typer.Option("--augment/--no-augment", help="Random flips, "
                                          "rotations, scaling, deformation, noise.")] = True,
    threads: Annotated[int | None, typer.Option(
        "--threads", help="CPU threads for torch (1 is fastest on a busy machine; default: "
        "torch's).")] = None,
    progress: ProgressOpt = True,
) -> None:
    """Train the ROI network: the left ventricle (blood pool, myocardium, edema, scar)."""
    import time

    import torch

    from deepgmm.data.dataset import load_dataset
    from deepgmm.errors import InputError
    from deepgmm.roi.model import RoiSettings, check_settings
    from deepgmm.roi.train import train_roi

    names = tuple(s.strip() for s in sequences.split(",") if s.strip())
    if not names:
        raise InputError(f"--sequences needs at least one name, got {sequences!r}")
    settings = RoiSettings(spacing_mm=spacing, crop=crop, epochs=epochs, batch_size=batch,
                           lr=lr, seed=seed, augment=augment)
    check_settings(settings)
    if threads is not None:
        if threads < 1:
            raise InputError(f"--threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)
    from deepgmm.output_paths import check_output_folder

    check_output_folder(out, [root], replace=False, what="ROI run folder")
    _check_run_folder(out)
    volumes = load_dataset(root, patient_list(ctx, patients), exclude=split_ids([exclude])
                           if exclude else None, sequences=names)
    start = time.perf_counter()
    model = train_roi(volumes, out, settings=settings, progress=progress)
    history = model.config["history"]
    typer.echo(f"trained on {model.config['n_train_slices']} slices of {len(volumes)} "
               f"patients ({', '.join(names)}) in {time.perf_counter() - start:.0f} s, "
               f"{epochs} epochs, final loss {history[-1]:.4f}")
    typer.echo(f"ROI run: {out}")


@command("predict", group=roi_app, context_settings=MULTI_VALUE_CONTEXT)
def roi_predict_command(
    ctx: typer.Context,
    roi_run: Annotated[Path, typer.Argument(help="Folder of a `deepgmm roi train` run.")],
    root: Annotated[Path, typer.Argument(help="Data (MyoPS layout; ground truth not "
                                         "needed).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for <case>_roi.nii.gz "
                                      "and roi_summary.json.")],
    patients: PatientsOpt = None,
    progress: ProgressOpt = True,
) -> None:
    """Write <case>_roi.nii.gz, the predicted LV mask on each case's grid."""
    from deepgmm.roi.predict import predict_folder

    results = predict_folder(roi_run, root, out, patient_list(ctx, patients),
                             progress=progress)
    typer.echo(f"{'case':>6}  {'LV slices':>9}  {'volume (ml)':>11}  file")
    for r in results:
        where = r.file if r.file else "skipped: no left ventricle found"
        typer.echo(f"{r.case_id:>6}  {len(r.slices):>4} / {r.n_slices:<2}  "
                   f"{r.volume_ml:>11.1f}  {where}")
    skipped = [r.case_id for r in results if r.file is None]
    line = f"{len(results) - len(skipped)} of {len(results)} case(s) written to {out}"
    if skipped:
        line += f"; skipped (no LV found): {', '.join(skipped)}"
    typer.echo(line)
