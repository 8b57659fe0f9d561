"""Segmenting commands: ``em`` (EM baselines), ``fit`` (deepG/deepSVG per slice), ``segment``
(one case of any co-registered sequences)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated, Any

import typer

from deepgmm.cli import command
from deepgmm.commands._options import (
    MULTI_VALUE_CONTEXT,
    AnatomyOpt,
    FusionOpt,
    RecipeOpt,
    ResourcesOpt,
    ResumeOpt,
    SchedulerOpt,
    ThreadsOpt,
    WorkersOpt,
    cluster_options,
    parse_named_files,
    patient_list,
    report_cohort,
    resolve_anatomy,
    resolve_fusion,
)

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
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:<index>.")]
SelectionOpt = Annotated[str, typer.Option(
    "--selection", help="all-classes (slices with every class, as in the paper) or roi "
    "(every slice with a non-empty ROI).")]
CropOpt = Annotated[int, typer.Option("--crop", help="Square crop size around the ROI.")]
RoiOpt = Annotated[str, typer.Option(
    "--roi", help="Where the ROI (left ventricle) comes from: gt (the ground truth), auto "
    "(predicted by --roi-run; data without ground truth is segmented, not scored) or a "
    "folder of <case>_roi.nii.gz masks (from `deepgmm roi predict`). With auto or a folder, "
    "--selection roi takes every slice with ROI. With auto, the LV anatomy rules leave blood "
    "apart from the cavity out of the LV (a predicted mask can take in the right "
    "ventricle's).")]
RoiRunOpt = Annotated[Path | None, typer.Option(
    "--roi-run", help="ROI run folder (from `deepgmm roi train`) for --roi auto.")]
NormalisationOpt = Annotated[str, typer.Option(
    "--normalisation", help="Z-score each slice and sequence over the crop or over the roi.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed (results are "
                                      "reproducible from it).")]
FiguresOpt = Annotated[bool, typer.Option("--figures/--no-figures", help="Write one PNG "
                                          "per slice.")]
ProgressOpt = Annotated[bool, typer.Option("--progress/--no-progress",
                                           help="Show progress bars.")]
NamingOpt = Annotated[str, typer.Option(
    "--naming", help="File names of the maps: deepgmm (<case>_seg.nii.gz, _prob) or bids "
    "(<case>_dseg.nii.gz, _probseg with a JSON sidecar naming each volume's class).")]

# EM options (GaussianMixtureEM / SpatiallyVariantEM).
EMModelOpt = Annotated[str, typer.Option("--model", help="em-gmm or em-svgmm.")]
CovarianceOpt = Annotated[str, typer.Option("--covariance", help="diag or full.")]
InitOpt = Annotated[str | None, typer.Option(
    "--init", help="random, kmeans, or mu_data (default: mu_data with --mu-data, else "
    "kmeans).")]
EMTolOpt = Annotated[float | None, typer.Option(
    "--tol", help="Stopping tolerance (default: 2e-4 for em-gmm, 1e-3 for em-svgmm).")]
EMMaxIterOpt = Annotated[int, typer.Option("--max-iter", help="Maximum EM iterations.")]
VarFloorOpt = Annotated[float, typer.Option(
    "--var-floor", help="Added to every variance (scikit-learn's reg_covar).")]
KMeansInitOpt = Annotated[int, typer.Option(
    "--n-kmeans-init", help="k-means restarts for --init kmeans.")]
GmmTolOpt = Annotated[float | None, typer.Option(
    "--gmm-tol", help="em-svgmm only: --tol of the initialising GMM fit (default: 2e-4).")]
GmmMaxIterOpt = Annotated[int | None, typer.Option(
    "--gmm-max-iter", help="em-svgmm only: --max-iter of the initialising GMM fit "
    "(default: 100).")]
SmoothingOpt = Annotated[float | None, typer.Option(
    "--smooth", help="em-svgmm only: σ in pixels of a Gaussian smoothing of "
    "the per-pixel weights after each E-step (a spatial prior; default 0, the published "
    "algorithm).")]

# deepG / deepSVG options (fit_slices).
DeepModelOpt = Annotated[str, typer.Option("--model", help="deepg or deepsvg.")]
LamOpt = Annotated[float, typer.Option("--lam", help="Weight of the μ_data penalty "
                                       "(needs --mu-data; fixes the class order).")]
TolOpt = Annotated[float, typer.Option("--tol", help="Stop a slice when |ΔNLL| < tol.")]
MinIterOpt = Annotated[int | None, typer.Option(
    "--min-iter", help="Minimum iterations per slice (default: 10, or --max-iter when "
    "smaller).")]
MaxIterOpt = Annotated[int, typer.Option("--max-iter", help="Maximum iterations per slice.")]
LrOpt = Annotated[float, typer.Option("--lr", help="AdamW learning rate.")]
WeightDecayOpt = Annotated[float, typer.Option("--weight-decay", help="AdamW weight "
                                               "decay.")]
ClipNormOpt = Annotated[float, typer.Option(
    "--clip-norm", help="Clip each slice's gradient norm to this (0: off).")]
ConcurrentOpt = Annotated[int | None, typer.Option(
    "--concurrent", help="Most slices fitted at once (default: 8 on CPU, 64 on CUDA).")]
BaseFiltersOpt = Annotated[int, typer.Option(
    "--base-filters", help="U-Net channels at full resolution (32 as published; 16 is about "
    "3x faster on CPU).")]
DepthOpt = Annotated[int, typer.Option("--depth", help="U-Net down-sampling steps; the crop "
                                       "must be divisible by 2**depth.")]
MechanismOpt = Annotated[str, typer.Option(
    "--mechanism", help="How the slices' networks run together: auto, loop, vmap or "
    "threads (CPU); the results agree to float rounding.")]
StopOpt = Annotated[str, typer.Option(
    "--stop", help="Stopping rule per slice: published (|ΔNLL| < --tol) or labels (fewer "
    "than --label-tol of the ROI pixels changed class over the last --label-window "
    "iterations).")]
LabelTolOpt = Annotated[float, typer.Option(
    "--label-tol", help="--stop labels: fraction of ROI pixels (0.001 = 0.1 %).")]
LabelWindowOpt = Annotated[int, typer.Option(
    "--label-window", help="--stop labels: iterations looked back.")]
LrWarmupOpt = Annotated[int, typer.Option(
    "--lr-warmup", help="Learning-rate warm-up: linear ramp to --lr over this many steps "
    "(0: none).")]
LrHalfLifeOpt = Annotated[float, typer.Option(
    "--lr-half-life", help="Learning-rate decay after the warm-up: halved every this many "
    "steps (0: none).")]
ChannelsLastOpt = Annotated[bool, typer.Option(
    "--channels-last/--no-channels-last", help="Run the networks on channels-last (NHWC) "
    "tensors.")]
WarmInitOpt = Annotated[Path | None, typer.Option(
    "--init", help="Warm start: a `deepgmm train` run whose weights every slice starts "
    "from (same sequences, crop, normalisation and network; no context channels).")]
PrecisionOpt = Annotated[str, typer.Option(
    "--precision", help="deepG / deepSVG arithmetic: fp32, or bf16 (the networks' "
    "convolutions in bfloat16: faster on CPUs with AVX-512 BF16 / AMX and on recent GPUs; "
    "slightly different results).")]


def print_summary(summary: dict[str, Any], out: Path, figures: bool = True) -> None:
    """Print the Dice table of a summary and where the outputs are (``figures/`` only
    when figures were written)."""
    from deepgmm.report.clinical import format_measures
    from deepgmm.report.tables import format_summary

    typer.echo(format_summary(summary))
    if summary.get("clinical"):
        typer.echo(format_measures(summary["clinical"]))
    typer.echo(f"outputs: {out}  (results.csv, cases.csv, summary.json, NIfTI maps with "
               f"label tables{', figures/' if figures else ''})")


def given(**options: Any) -> dict[str, Any]:
    """The options given on the command line (those not left at ``None``)."""
    return {name: value for name, value in options.items() if value is not None}


def clip_norm_option(clip_norm: float | None) -> float | None:
    """``--clip-norm 0`` means off (``None``); other values pass unchanged."""
    return None if clip_norm == 0 else clip_norm


def default_min_iter(min_iter: int | None, max_iter: int) -> int:
    """``--min-iter``, defaulting to the published 10, or to ``--max-iter`` when that is
    smaller (``--max-iter 5`` alone is a valid request)."""
    from deepgmm.options import FitOptions

    if min_iter is not None:
        return min_iter
    return min(FitOptions.min_iter, max_iter) if max_iter >= 0 else FitOptions.min_iter


def warn_rule_without_order(anatomy: str | None, ordered: bool, matching: str) -> None:
    """Warn when ``--anatomy lv`` or ``lv-dice`` was asked for but cannot apply: no class
    order (no μ_data,
    or lam 0) and no --matching rule, so the label maps are the most likely clusters."""
    from deepgmm.anatomy import is_anatomy_rule

    if is_anatomy_rule(anatomy) and not ordered and matching == "none":
        warnings.warn(f"--anatomy {anatomy} applies where the class order is known "
                      "(--mu-data, and "
                      "--lam > 0 for deepg / deepsvg) or a --matching rule assigns the "
                      "clusters; here the label maps are each pixel's most likely cluster",
                      stacklevel=2)


def em_init(init: str | None, mu_data: Path | None) -> str:
    """``--init``, defaulting to ``mu_data`` when ``--mu-data`` is given, else ``kmeans``."""
    if init is not None:
        return init
    return "mu_data" if mu_data is not None else "kmeans"


@command("em", context_settings=MULTI_VALUE_CONTEXT)
def em_command(
    ctx: typer.Context,
    root: RootArg,
    out: OutOpt,
    model: EMModelOpt = "em-gmm",
    covariance: CovarianceOpt = "diag",
    init: InitOpt = None,
    mu_data: MuDataOpt = None,
    patients: PatientsOpt = None,
    matching: MatchingOpt = "hungarian",
    roi: RoiOpt = "gt",
    roi_run: RoiRunOpt = None,
    tol: EMTolOpt = None,
    max_iter: EMMaxIterOpt = 100,
    var_floor: VarFloorOpt = 1e-3,
    n_kmeans_init: KMeansInitOpt = 4,
    gmm_tol: GmmTolOpt = None,
    gmm_max_iter: GmmMaxIterOpt = None,
    smoothing: SmoothingOpt = None,
    selection: SelectionOpt = "all-classes",
    crop_size: CropOpt = 160,
    normalisation: NormalisationOpt = "crop",
    anatomy: AnatomyOpt = None,
    fusion: FusionOpt = None,
    recipe: RecipeOpt = "deepgmm",
    device: DeviceOpt = "auto",
    seed: SeedOpt = 33,
    figures: FiguresOpt = True,
    progress: ProgressOpt = True,
    naming: NamingOpt = "deepgmm",
    workers: WorkersOpt = None,
    scheduler: SchedulerOpt = None,
    resources: ResourcesOpt = None,
    threads: ThreadsOpt = 1,
    resume: ResumeOpt = False,
) -> None:
    """EM baselines: a Gaussian mixture (em-gmm) or spatially variant mixture (em-svgmm) per
    slice."""
    from deepgmm.options import EM_MODELS, options_class
    from deepgmm.pipeline import segment_dataset

    options_class(model, caller="em", models=EM_MODELS)
    warn_rule_without_order(anatomy, mu_data is not None, matching)
    options = given(covariance=covariance, init=em_init(init, mu_data), tol=tol,
                    max_iter=max_iter, var_floor=var_floor, n_kmeans_init=n_kmeans_init,
                    gmm_tol=gmm_tol, gmm_max_iter=gmm_max_iter, smoothing=smoothing,
                    seed=seed, device=device)
    cluster = cluster_options(workers, scheduler, resources, threads, resume)
    run = dict(patients=patient_list(ctx, patients), selection=selection,
               crop_size=crop_size, normalisation=normalisation, mu_data=mu_data,
               matching=matching, roi=roi, roi_run=roi_run, figures=figures,
               progress=progress, naming=naming,
               anatomy=resolve_anatomy(recipe, anatomy),
               fusion=resolve_fusion(recipe, fusion))
    if cluster is None:
        summary = segment_dataset(root, out, model=model, **run, **options)
        print_summary(summary, out, figures)
        return
    from deepgmm.cohort import segment_cohort

    cohort = segment_cohort(root, out, model=model, cluster=cluster, **run, **options)
    print_summary(cohort.summary, out, figures)
    report_cohort(cohort)


@command("fit", context_settings=MULTI_VALUE_CONTEXT)
def fit_command(
    ctx: typer.Context,
    root: RootArg,
    out: OutOpt,
    model: DeepModelOpt = "deepsvg",
    lam: LamOpt = 0.0,
    mu_data: MuDataOpt = None,
    tol: TolOpt = 1e-3,
    min_iter: MinIterOpt = None,
    max_iter: MaxIterOpt = 200,
    lr: LrOpt = 1e-4,
    weight_decay: WeightDecayOpt = 1e-3,
    clip_norm: ClipNormOpt = 12.0,
    patients: PatientsOpt = None,
    concurrent: ConcurrentOpt = None,
    base_filters: BaseFiltersOpt = 32,
    depth: DepthOpt = 4,
    mechanism: MechanismOpt = "auto",
    precision: PrecisionOpt = "fp32",
    stop: StopOpt = "published",
    label_tol: LabelTolOpt = 1e-3,
    label_window: LabelWindowOpt = 5,
    lr_warmup: LrWarmupOpt = 0,
    lr_half_life: LrHalfLifeOpt = 0.0,
    channels_last: ChannelsLastOpt = False,
    init_run: WarmInitOpt = None,
    matching: MatchingOpt = "hungarian",
    roi: RoiOpt = "gt",
    roi_run: RoiRunOpt = None,
    selection: SelectionOpt = "all-classes",
    crop_size: CropOpt = 160,
    normalisation: NormalisationOpt = "crop",
    anatomy: AnatomyOpt = None,
    fusion: FusionOpt = None,
    recipe: RecipeOpt = "deepgmm",
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    figures: FiguresOpt = True,
    progress: ProgressOpt = True,
    naming: NamingOpt = "deepgmm",
    workers: WorkersOpt = None,
    scheduler: SchedulerOpt = None,
    resources: ResourcesOpt = None,
    threads: ThreadsOpt = 1,
    resume: ResumeOpt = False,
) -> None:
    """deepG / deepSVG: a fresh U-Net per slice, many slices fitted at once."""
    from deepgmm.options import DEEP_MODELS, options_class
    from deepgmm.pipeline import segment_dataset

    options_class(model, caller="fit", models=DEEP_MODELS)
    warn_rule_without_order(anatomy, mu_data is not None and lam > 0, matching)
    options = {"lam": lam, "tol": tol, "min_iter": default_min_iter(min_iter, max_iter),
               "max_iter": max_iter, "lr": lr,
               "weight_decay": weight_decay, "clip_norm": clip_norm_option(clip_norm),
               "concurrent": concurrent, "base_filters": base_filters, "depth": depth,
               "mechanism": mechanism, "precision": precision, "seed": seed,
               "device": device, "stop": stop, "label_tol": label_tol,
               "label_window": label_window, "lr_warmup": lr_warmup,
               "lr_half_life": lr_half_life, "channels_last": channels_last}
    cluster = cluster_options(workers, scheduler, resources, threads, resume)
    run = dict(patients=patient_list(ctx, patients), selection=selection,
               crop_size=crop_size, normalisation=normalisation, mu_data=mu_data,
               matching=matching, roi=roi, roi_run=roi_run, figures=figures,
               progress=progress, naming=naming,
               anatomy=resolve_anatomy(recipe, anatomy),
               fusion=resolve_fusion(recipe, fusion))
    if cluster is None:
        summary = segment_dataset(root, out, model=model, init_run=init_run, **run,
                                  **options)
        print_summary(summary, out, figures)
        return
    if init_run is not None:
        from deepgmm.errors import InputError

        raise InputError("--init is not available for per-case jobs (--workers, --scheduler, "
                         "--resume)", params=("init_run",))
    from deepgmm.cohort import segment_cohort

    cohort = segment_cohort(root, out, model=model, cluster=cluster, **run, **options)
    print_summary(cohort.summary, out, figures)
    report_cohort(cohort)


def _model_option(flag: str, kind: type, models: str, what: str) -> Any:
    """A ``segment`` option of some models, ``None`` (the model's default) unless given."""
    which = "" if models == "all models" else " only"
    return Annotated[kind | None, typer.Option(  # type: ignore[valid-type]
        flag, help=f"{models}{which}: {what} (default: the model's).")]


@command("segment")
def segment_command(
    out: OutOpt,
    images: Annotated[list[str], typer.Option(
        "--image", help="NAME=FILE for each co-registered sequence, e.g. --image "
        "C0=c0.nii.gz --image DE=de.nii.gz (any names, any number).")],
    roi: Annotated[str, typer.Option(
        "--roi", help="The region to segment: a NIfTI mask file, gt (the left ventricle of "
        "--gt) or auto (predicted from the images by --roi-run; the images must include the "
        "run's sequences by name).")] = "gt",
    labels: Annotated[Path | None, typer.Option("--gt", help="Optional ground truth (MyoPS "
                                                "codes) for Dice.")] = None,
    roi_run: RoiRunOpt = None,
    model: Annotated[str, typer.Option("--model", help="deepsvg, deepg, em-gmm or "
                                       "em-svgmm; each option below names the models that "
                                       "take it.")] = "deepsvg",
    case_id: Annotated[str, typer.Option("--case-id", help="Name of the case in the "
                                         "outputs (<case-id>_seg.nii.gz).")] = "case",
    mu_data: MuDataOpt = None,
    lam: _model_option("--lam", float, "deepg/deepsvg",
                       "weight of the μ_data penalty (needs --mu-data)") = None,
    tol: _model_option("--tol", float, "all models", "stopping tolerance") = None,
    min_iter: _model_option("--min-iter", int, "deepg/deepsvg",
                            "minimum iterations per slice; at most --max-iter") = None,
    max_iter: _model_option("--max-iter", int, "all models", "maximum iterations") = None,
    lr: _model_option("--lr", float, "deepg/deepsvg", "AdamW learning rate") = None,
    weight_decay: _model_option("--weight-decay", float, "deepg/deepsvg",
                                "AdamW weight decay") = None,
    clip_norm: _model_option("--clip-norm", float, "deepg/deepsvg",
                             "gradient-norm clipping per slice, 0: off") = None,
    concurrent: _model_option("--concurrent", int, "deepg/deepsvg",
                              "most slices fitted at once") = None,
    base_filters: _model_option("--base-filters", int, "deepg/deepsvg",
                                "U-Net channels at full resolution") = None,
    depth: _model_option("--depth", int, "deepg/deepsvg", "U-Net down-sampling steps") = None,
    mechanism: _model_option("--mechanism", str, "deepg/deepsvg",
                             "auto, loop, vmap or threads") = None,
    precision: _model_option("--precision", str, "deepg/deepsvg", "fp32 or bf16") = None,
    stop: _model_option("--stop", str, "deepg/deepsvg",
                        "stopping rule, published (|ΔNLL|) or labels (label map)") = None,
    label_tol: _model_option("--label-tol", float, "deepg/deepsvg",
                             "--stop labels: fraction of ROI pixels") = None,
    label_window: _model_option("--label-window", int, "deepg/deepsvg",
                                "--stop labels: iterations looked back") = None,
    lr_warmup: _model_option("--lr-warmup", int, "deepg/deepsvg",
                             "learning-rate warm-up steps") = None,
    lr_half_life: _model_option("--lr-half-life", float, "deepg/deepsvg",
                                "learning-rate half-life in steps after the warm-up") = None,
    channels_last: _model_option("--channels-last", bool, "deepg/deepsvg",
                                 "channels-last (NHWC) tensors") = None,
    covariance: _model_option("--covariance", str, "em-gmm/em-svgmm", "diag or full") = None,
    init: Annotated[str | None, typer.Option(
        "--init", help="em-gmm/em-svgmm only: random, kmeans or mu_data (default: mu_data with "
        "--mu-data, else kmeans).")] = None,
    var_floor: _model_option("--var-floor", float, "em-gmm/em-svgmm",
                             "added to every variance") = None,
    n_kmeans_init: _model_option("--n-kmeans-init", int, "em-gmm/em-svgmm",
                                 "k-means restarts for --init kmeans") = None,
    gmm_tol: GmmTolOpt = None,
    gmm_max_iter: GmmMaxIterOpt = None,
    smoothing: SmoothingOpt = None,
    matching: Annotated[str | None, typer.Option(
        "--matching", help="hungarian, greedy or none (default: hungarian with --gt, "
        "else none).")] = None,
    selection: Annotated[str, typer.Option(
        "--selection", help="roi (every slice with a non-empty ROI) or all-classes (slices "
        "with every class; needs --gt).")] = "roi",
    crop_size: CropOpt = 160,
    normalisation: NormalisationOpt = "crop",
    anatomy: AnatomyOpt = None,
    fusion: FusionOpt = None,
    recipe: RecipeOpt = "deepgmm",
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    figures: FiguresOpt = True,
    progress: ProgressOpt = True,
    naming: NamingOpt = "deepgmm",
    workers: WorkersOpt = None,
    scheduler: SchedulerOpt = None,
    resources: ResourcesOpt = None,
    threads: ThreadsOpt = 1,
    resume: ResumeOpt = False,
) -> None:
    """Segment one case of any co-registered sequences inside an ROI (a mask, the ground
    truth's left ventricle, or one an ROI run finds)."""
    from deepgmm.pipeline import segment_case

    if model.startswith("em-"):
        init = em_init(init, mu_data)
    elif max_iter is not None:
        min_iter = default_min_iter(min_iter, max_iter)
    options = given(lam=lam, tol=tol, min_iter=min_iter, max_iter=max_iter, lr=lr,
                    weight_decay=weight_decay, clip_norm=clip_norm, concurrent=concurrent,
                    base_filters=base_filters, depth=depth, mechanism=mechanism,
                    precision=precision, stop=stop, label_tol=label_tol,
                    label_window=label_window, lr_warmup=lr_warmup, lr_half_life=lr_half_life,
                    channels_last=channels_last, covariance=covariance, init=init,
                    var_floor=var_floor, n_kmeans_init=n_kmeans_init, gmm_tol=gmm_tol,
                    gmm_max_iter=gmm_max_iter, smoothing=smoothing, seed=seed, device=device)
    warn_rule_without_order(
        anatomy, mu_data is not None and (model.startswith("em-") or (lam or 0.0) > 0),
        matching or ("hungarian" if labels is not None else "none"))
    if "clip_norm" in options:
        options["clip_norm"] = clip_norm_option(options["clip_norm"])
    cluster = cluster_options(workers, scheduler, resources, threads, resume)
    run = dict(labels=labels, model=model, case_id=case_id, selection=selection,
               crop_size=crop_size, normalisation=normalisation, mu_data=mu_data,
               matching=matching, figures=figures, progress=progress, naming=naming,
               anatomy=resolve_anatomy(recipe, anatomy),
               fusion=resolve_fusion(recipe, fusion))
    named = parse_named_files(images, "--image")
    if cluster is None:
        summary = segment_case(named, roi, out, roi_run=roi_run, **run, **options)
        print_summary(summary, out, figures)
        return
    if str(roi) in ("gt", "auto") or roi_run is not None:
        from deepgmm.errors import InputError

        raise InputError("segment as a per-case job (--workers, --scheduler, --resume) needs "
                         f"--roi as a mask file, got --roi {roi}", params=("roi",))
    from deepgmm.cohort import segment_case_cohort

    cohort = segment_case_cohort(named, roi, out, cluster=cluster, **run, **options)
    print_summary(cohort.summary, out, figures)
    report_cohort(cohort)
