"""Segmenting commands: ``em`` (EM baselines), ``fit`` (deepG/deepSVG per slice), ``segment``
(one case of any co-registered sequences)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from deepgmm.cli import command
from deepgmm.commands._options import MULTI_VALUE_CONTEXT, parse_named_files, patient_list

RootArg = Annotated[Path, typer.Argument(help="Folder with <prefix>_<n>_{C0,DE,T2}.nii.gz "
                                              "images and <prefix>_<n>_gd.nii.gz labels.")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Output folder (label and "
                                      "probability maps, results.csv, summary.json, PNGs).")]
PatientsOpt = Annotated[list[str] | None, typer.Option(
    "--patients", help="Case ids to segment, e.g. --patients 109 114 (default: all).")]
MuDataOpt = Annotated[Path | None, typer.Option(
    "--mu-data", help="JSON of class means (from `deepgmm mu-data`).")]
MatchingOpt = Annotated[str, typer.Option(
    "--matching", help="Cluster-to-class rule: hungarian (max total Dice vs ground truth), "
    "greedy (published rule) or none (class order from μ_data).")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")]
SelectionOpt = Annotated[str, typer.Option(
    "--selection", help="all-classes (slices with every class, as in the paper) or roi "
    "(every slice with a non-empty ROI).")]
CropOpt = Annotated[int, typer.Option("--crop", help="Square crop size around the ROI.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed (results are "
                                      "reproducible from it).")]
FiguresOpt = Annotated[bool, typer.Option("--figures/--no-figures", help="Write one PNG "
                                          "per slice.")]
ProgressOpt = Annotated[bool, typer.Option("--progress/--no-progress",
                                           help="Show progress bars.")]


def print_summary(summary: dict[str, Any], out: Path) -> None:
    """Print the Dice table of a summary and where the outputs are."""
    from deepgmm.report.tables import format_summary

    typer.echo(format_summary(summary))
    typer.echo(f"outputs: {out}  (results.csv, summary.json, NIfTI maps, figures/)")


@command("em", context_settings=MULTI_VALUE_CONTEXT)
def em_command(
    ctx: typer.Context,
    root: RootArg,
    out: OutOpt,
    model: Annotated[str, typer.Option("--model", help="gmm or svgmm.")] = "gmm",
    covariance: Annotated[str, typer.Option("--covariance", help="diag or full.")] = "diag",
    init: Annotated[str, typer.Option("--init", help="random, kmeans, or mu_data "
                                      "(implied by --mu-data).")] = "kmeans",
    mu_data: MuDataOpt = None,
    patients: PatientsOpt = None,
    matching: MatchingOpt = "hungarian",
    tol: Annotated[float | None, typer.Option("--tol", help="Stopping tolerance (default: "
                                              "2e-4 for gmm, 1e-3 for svgmm).")] = None,
    max_iter: Annotated[int, typer.Option("--max-iter", help="Maximum EM iterations.")] = 100,
    smooth: Annotated[float, typer.Option(
        "--smooth", help="svgmm only: σ in pixels of a Gaussian smoothing of the per-pixel "
        "weights after each E-step (a spatial prior); 0 is the published algorithm.")] = 0.0,
    selection: SelectionOpt = "all-classes",
    crop: CropOpt = 160,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 33,
    figures: FiguresOpt = True,
    progress: ProgressOpt = True,
) -> None:
    """EM baselines: a Gaussian mixture (gmm) or spatially variant mixture (svgmm) per slice."""
    from deepgmm.errors import InputError
    from deepgmm.pipeline import check_choice, segment_dataset

    check_choice("--model", model, ("gmm", "svgmm"))
    if mu_data is not None:
        init = "mu_data"
    options: dict[str, Any] = {"covariance": covariance, "init": init, "max_iter": max_iter,
                               "seed": seed, "device": device}
    if tol is not None:
        options["tol"] = tol
    if smooth:
        if model != "svgmm":
            raise InputError("--smooth applies to --model svgmm (per-pixel weights) only")
        options["smoothing"] = smooth
    summary = segment_dataset(root, out, method=f"em-{model}",
                              patients=patient_list(ctx, patients), selection=selection,
                              crop_size=crop, mu_data=mu_data, matching=matching,
                              figures=figures, progress=progress, **options)
    print_summary(summary, out)


def _fit_options(*, lam: float, tol: float, min_iter: int, max_iter: int, lr: float,
                 batch: int | None, device: str, seed: int, base_filters: int,
                 depth: int, precision: str) -> dict[str, Any]:
    return {"lam": lam, "tol": tol, "min_iter": min_iter, "max_iter": max_iter, "lr": lr,
            "batch_size": batch, "device": device, "seed": seed,
            "net_config": {"base_filters": base_filters, "depth": depth},
            "precision": precision}


LamOpt = Annotated[float, typer.Option("--lam", help="Weight of the μ_data penalty "
                                       "(needs --mu-data; fixes the class order).")]
TolOpt = Annotated[float, typer.Option("--tol", help="Stop a slice when |ΔNLL| < tol.")]
MinIterOpt = Annotated[int, typer.Option("--min-iter", help="Minimum iterations per slice.")]
MaxIterOpt = Annotated[int, typer.Option("--max-iter", help="Maximum iterations per slice.")]
LrOpt = Annotated[float, typer.Option("--lr", help="AdamW learning rate.")]
BatchOpt = Annotated[int | None, typer.Option("--batch", help="Slices fitted at once "
                                              "(default: all).")]
DeepModelOpt = Annotated[str, typer.Option("--model", help="deepg or deepsvg.")]
BaseFiltersOpt = Annotated[int, typer.Option(
    "--base-filters", help="U-Net channels at full resolution (32 as published; 16 is about "
    "3x faster on CPU).")]
DepthOpt = Annotated[int, typer.Option("--depth", help="U-Net down-sampling steps; the crop "
                                       "must be divisible by 2**depth.")]
PrecisionOpt = Annotated[str, typer.Option(
    "--precision", help="deepG / deepSVG arithmetic: fp32, or bf16 (the networks' "
    "convolutions in bfloat16: faster on CPUs with AVX-512 BF16 / AMX and on recent GPUs; "
    "slightly different results).")]


@command("fit", context_settings=MULTI_VALUE_CONTEXT)
def fit_command(
    ctx: typer.Context,
    root: RootArg,
    out: OutOpt,
    model: DeepModelOpt = "deepsvg",
    lam: LamOpt = 0.0,
    mu_data: MuDataOpt = None,
    tol: TolOpt = 1e-3,
    min_iter: MinIterOpt = 10,
    max_iter: MaxIterOpt = 200,
    lr: LrOpt = 1e-4,
    patients: PatientsOpt = None,
    batch: BatchOpt = None,
    base_filters: BaseFiltersOpt = 32,
    depth: DepthOpt = 4,
    precision: PrecisionOpt = "fp32",
    matching: MatchingOpt = "hungarian",
    selection: SelectionOpt = "all-classes",
    crop: CropOpt = 160,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    figures: FiguresOpt = True,
    progress: ProgressOpt = True,
) -> None:
    """deepG / deepSVG: a fresh U-Net per slice, many slices fitted at once."""
    from deepgmm.errors import InputError
    from deepgmm.fit.precision import PRECISIONS
    from deepgmm.pipeline import check_choice, segment_dataset

    check_choice("--model", model, ("deepg", "deepsvg"))
    check_choice("--precision", precision, PRECISIONS)
    if lam > 0 and mu_data is None:
        raise InputError("--lam > 0 needs --mu-data (class means from `deepgmm mu-data`)")
    summary = segment_dataset(
        root, out, method=model, patients=patient_list(ctx, patients), selection=selection,
        crop_size=crop, mu_data=mu_data, matching=matching, figures=figures,
        progress=progress,
        **_fit_options(lam=lam, tol=tol, min_iter=min_iter, max_iter=max_iter, lr=lr,
                       batch=batch, device=device, seed=seed, base_filters=base_filters,
                       depth=depth, precision=precision))
    print_summary(summary, out)


@command("segment")
def segment_command(
    out: OutOpt,
    image: Annotated[list[str], typer.Option(
        "--image", help="NAME=FILE for each co-registered sequence, e.g. --image "
        "C0=c0.nii.gz --image DE=de.nii.gz (any names, any number).")],
    roi: Annotated[Path, typer.Option("--roi", help="NIfTI mask of the region to segment.")],
    gt: Annotated[Path | None, typer.Option("--gt", help="Optional ground truth (MyoPS "
                                            "codes) for Dice.")] = None,
    model: Annotated[str, typer.Option("--model", help="deepsvg, deepg, em-gmm or "
                                       "em-svgmm.")] = "deepsvg",
    lam: LamOpt = 0.0,
    mu_data: MuDataOpt = None,
    tol: TolOpt = 1e-3,
    min_iter: MinIterOpt = 10,
    max_iter: MaxIterOpt = 200,
    lr: LrOpt = 1e-4,
    base_filters: BaseFiltersOpt = 32,
    depth: DepthOpt = 4,
    precision: PrecisionOpt = "fp32",
    matching: Annotated[str | None, typer.Option(
        "--matching", help="hungarian, greedy or none (default: hungarian with --gt, "
        "else none).")] = None,
    crop: CropOpt = 160,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    figures: FiguresOpt = True,
    progress: ProgressOpt = True,
) -> None:
    """Segment one case of any co-registered sequences inside an ROI mask."""
    from deepgmm.errors import InputError
    from deepgmm.fit.precision import PRECISIONS
    from deepgmm.pipeline import METHODS, check_choice, segment_case

    check_choice("--model", model, METHODS)
    check_choice("--precision", precision, PRECISIONS)
    if lam > 0 and mu_data is None:
        raise InputError("--lam > 0 needs --mu-data (class means from `deepgmm mu-data`)")
    if model.startswith("em-"):
        options: dict[str, Any] = {"init": "mu_data" if mu_data else "kmeans",
                                   "seed": seed, "device": device}
    else:
        options = _fit_options(lam=lam, tol=tol, min_iter=min_iter, max_iter=max_iter, lr=lr,
                               batch=None, device=device, seed=seed,
                               base_filters=base_filters, depth=depth, precision=precision)
    summary = segment_case(parse_named_files(image, "--image"), roi, out, labels=gt,
                           method=model, crop_size=crop, mu_data=mu_data, matching=matching,
                           figures=figures, progress=progress, **options)
    print_summary(summary, out)
