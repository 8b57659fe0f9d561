"""``train`` (one network for many slices) and ``predict`` (apply a trained network)."""

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
    patient_list,
    report_cohort,
    resolve_anatomy,
    resolve_fusion,
)

RootArg = Annotated[Path, typer.Argument(help="Folder with <prefix>_<n>_{C0,DE,T2}.nii.gz "
                                              "images and <prefix>_<n>_gd.nii.gz labels.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")]
ProgressOpt = Annotated[bool, typer.Option("--progress/--no-progress",
                                           help="Show progress bars.")]
SEQUENCES_HELP = "Sequence names in channel order (comma-separated)."


def default_train_patients(case_ids: list[str]) -> list[str]:
    """The paper's split: every case except the held-out 109 114 117 120 122 when those
    exist (MyoPS 2020 training data), otherwise every case."""
    from deepgmm.data.myops import MYOPS_DEV_TEST

    held_out = set(MYOPS_DEV_TEST)
    if held_out & set(case_ids):
        kept = [c for c in case_ids if c not in held_out]
        if kept:
            return kept
    return list(case_ids)


def _sequences(value: str) -> tuple[str, ...]:
    from deepgmm.errors import InputError

    names = tuple(s.strip() for s in value.split(",") if s.strip())
    if not names:
        raise InputError(f"--sequences needs at least one name, got {value!r}")
    return names


@command("train", context_settings=MULTI_VALUE_CONTEXT)
def train_command(
    ctx: typer.Context,
    root: RootArg,
    run_dir: Annotated[Path, typer.Option("--out", "-o", help="Run folder: model.safetensors, "
                                          "config.json, optimizer.safetensors, "
                                          "training_curve.png.")],
    model: Annotated[str, typer.Option("--model", help="deepg or deepsvg.")] = "deepg",
    lam: Annotated[float, typer.Option("--lam", help="Weight of the μ_data penalty (fixes "
                                       "the class order).")] = 1.0,
    mu_data: Annotated[Path | None, typer.Option(
        "--mu-data", help="JSON of class means (default: from 10 training slices' ground "
        "truth, seed 42).")] = None,
    train_patients: Annotated[list[str] | None, typer.Option(
        "--train-patients", help="Case ids to train on (default: all but 109 114 117 120 "
        "122 when those exist, else all).")] = None,
    epochs: Annotated[int, typer.Option("--epochs", help="Maximum epochs.")] = 100,
    min_epochs: Annotated[int, typer.Option("--min-epochs", help="Epochs before the "
                                            "stopping rule applies.")] = 10,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Slices per optimiser "
                                            "step.")] = 4,
    lr: Annotated[float, typer.Option("--lr", help="Initial AdamW learning rate.")] = 1e-3,
    weight_decay: Annotated[float, typer.Option("--weight-decay", help="AdamW weight "
                                                "decay.")] = 1e-3,
    tol: Annotated[float, typer.Option("--tol", help="Stop when the epoch NLL changes by "
                                       "less.")] = 5e-3,
    penalty: Annotated[str, typer.Option(
        "--penalty", help="batch: pull the mini-batch's mean class means towards μ_data "
        "(published); slice: pull every slice's class means.")] = "batch",
    clip_norm: Annotated[float, typer.Option("--clip-norm", help="Gradient-norm clipping "
                                             "(0: off).")] = 12.0,
    label_weight: Annotated[float, typer.Option(
        "--label-weight", help="Weight of a cross-entropy term on the slices whose ground "
        "truth defines μ_data (0: none, the published loss; needs ground truth).")] = 0.0,
    labelled_slices: Annotated[int, typer.Option(
        "--labelled-slices", help="How many training slices carry their labels with "
        "--label-weight (drawn as μ_data's slices are: the same 10 by default).")] = 10,
    context: Annotated[str, typer.Option(
        "--context", help="Extra network input channels from the ROI: none (published), "
        "distance (to the ROI border) or distance+radius (and from the ROI centroid).")
    ] = "none",
    potts_weight: Annotated[float, typer.Option(
        "--potts-weight", help="Weight of a Potts term (neighbouring pixels' class "
        "disagreement inside the ROI) in the loss (0: none, the published loss).")] = 0.0,
    consistency_weight: Annotated[float, typer.Option(
        "--consistency-weight", help="Weight of a consistency term: the class probabilities "
        "of each slice and of a flipped, intensity-jittered copy should agree (0: none, the "
        "published loss; needs no labels).")] = 0.0,
    labelled_seed: Annotated[int, typer.Option(
        "--labelled-seed", help="Seed of the draw of the labelled slices for --label-weight "
        "and --prior all (the seed μ_data was drawn with; mu-data's default is 42).")] = 42,
    prior: Annotated[str, typer.Option(
        "--prior", help="means: penalise only the class means (published); all: also the "
        "mini-batch's mean log variances and weights, towards the statistics of the 10 "
        "training slices whose ground truth gives μ_data (seed 42; needs ground "
        "truth).")] = "means",
    lam_var: Annotated[float, typer.Option(
        "--lam-var", help="Weight of the log-variance penalty with --prior all.")] = 1.0,
    lam_weights: Annotated[float, typer.Option(
        "--lam-weights", help="Weight of the weight penalty (KL divergence) with --prior "
        "all.")] = 1.0,
    components_per_class: Annotated[int, typer.Option(
        "--components-per-class", help="Gaussian components per class (1: published); "
        "a class's probability is the sum of its components'.")] = 1,
    augment: Annotated[bool, typer.Option(
        "--augment/--no-augment", help="Elastic deformation, rotation, scaling, flips and "
        "noise, with the published probabilities.")] = True,
    crop_size: Annotated[int, typer.Option("--crop", help="Square crop size around the "
                                           "ROI.")] = 160,
    normalisation: Annotated[str | None, typer.Option(
        "--normalisation", help="Z-score each slice and sequence over the crop or over the "
        "roi (recorded; predict uses it). Default: a resumed run's, else the --mu-data "
        "file's, else the --recipe's (deepgmm: roi, published: crop).")] = None,
    base_filters: Annotated[int, typer.Option("--base-filters", help="U-Net channels of "
                                              "the first level.")] = 32,
    depth: Annotated[int, typer.Option("--depth", help="U-Net down-sampling steps.")] = 4,
    sequences: Annotated[str, typer.Option("--sequences", help=SEQUENCES_HELP)] = "C0,DE,T2",
    device: DeviceOpt = "auto",
    precision: Annotated[str, typer.Option(
        "--precision", help="fp32, or bf16: the network's convolutions in bfloat16 (faster "
        "on CPUs with AVX-512 BF16 / AMX and on recent GPUs; slightly different "
        "results).")] = "fp32",
    seed: Annotated[int, typer.Option("--seed", help="Seeds weights, order and "
                                      "augmentation.")] = 0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from "
                                         "its last saved epoch.")] = False,
    progress: ProgressOpt = True,
    recipe: RecipeOpt = "deepgmm",
) -> None:
    """Train one deepG / deepSVG U-Net on the all-class slices of many cases."""
    from deepgmm.data.dataset import load_dataset
    from deepgmm.data.myops import discover_cases
    from deepgmm.data.slices import make_batch
    from deepgmm.errors import InputError
    from deepgmm.fit.checkpoint import has_checkpoint
    from deepgmm.fit.train import train_network
    from deepgmm.options import TrainOptions
    from deepgmm.output_paths import check_output_folder
    from deepgmm.pipeline import load_mu

    options = TrainOptions(
        model=model, lam=lam, epochs=epochs, min_epochs=min_epochs, batch_size=batch_size,
        lr=lr, weight_decay=weight_decay, tol=tol, seed=seed, device=device, augment=augment,
        depth=depth, base_filters=base_filters, penalty=penalty,
        clip_norm=None if clip_norm == 0 else clip_norm, label_weight=label_weight,
        labelled_slices=labelled_slices, precision=precision, context=context,
        potts_weight=potts_weight, consistency_weight=consistency_weight,
        labelled_seed=labelled_seed, prior=prior, lam_var=lam_var, lam_weights=lam_weights,
        components_per_class=components_per_class)
    check_output_folder(run_dir, [root, mu_data], replace=False, what="run folder")
    if not resume and has_checkpoint(run_dir):  # say so before loading any data
        raise InputError(f"{str(run_dir)!r} already holds a checkpoint; pass resume to "
                         "continue it, or choose another run_dir",
                         params=("resume", "run_dir"))
    if resume and not has_checkpoint(run_dir):
        warnings.warn(f"{str(run_dir)!r} holds no checkpoint to resume; training starts "
                      "afresh", stacklevel=2)
    from deepgmm.fit.checkpoint import read_config
    from deepgmm.recipe import resolve_normalisation

    normalisation = resolve_normalisation(
        recipe, normalisation, mu_data,
        read_config(run_dir).get("normalisation") if resume and has_checkpoint(run_dir)
        else None)
    seqs = _sequences(sequences)
    ids = patient_list(ctx, train_patients, flag="--train-patients")
    if ids is None:
        ids = default_train_patients([c.case_id for c in discover_cases(root, seqs)])
    volumes = load_dataset(root, ids, sequences=seqs)
    slices = make_batch(volumes, selection="all-classes", crop_size=(crop_size, crop_size),
                        normalisation=normalisation)
    mu = load_mu(mu_data, seqs, batch=slices)
    result = train_network(slices, mu_data=mu, run_dir=run_dir, resume=resume,
                           progress=progress, **options.as_dict())
    from deepgmm._atomic import atomic_path
    from deepgmm.fit.train import record_run_files
    from deepgmm.report.html import REPORT_HTML, render_report
    from deepgmm.report.provenance import write_run_folder_record

    write_run_folder_record(run_dir, ids, options={"train_patients": ids, "resume": resume,
                                                   **options.as_dict()},
                            precision=options.precision)
    with atomic_path(Path(run_dir) / REPORT_HTML) as tmp:
        render_report(run_dir, tmp)
    record_run_files(run_dir)
    state = "converged" if result.converged else "stopped at the epoch limit"
    typer.echo(f"trained {model} on {len(slices)} slices of {len(volumes)} case(s): "
               f"{result.n_epochs} epochs ({state}), final NLL "
               f"{result.nll_history[-1]:.4f}, {result.seconds:.1f} s")
    typer.echo(f"run folder: {run_dir}")


@command("predict", context_settings=MULTI_VALUE_CONTEXT)
def predict_command(
    ctx: typer.Context,
    runs: Annotated[list[Path], typer.Argument(
        help="Run folder(s) written by `deepgmm train`; with several, their class "
        "probabilities are averaged (an ensemble of seeds or models).", show_default=False,
        metavar="RUN...")],
    root: RootArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (label and "
                                      "probability maps, results.csv, summary.json, "
                                      "PNGs).")],
    patients: Annotated[list[str] | None, typer.Option(
        "--patients", help="Case ids to segment (default: the cases not trained on, or all "
        "when every case was).")] = None,
    refine: Annotated[int, typer.Option("--refine", help="Per-slice fitting iterations "
                                        "started from the trained weights.")] = 0,
    refine_lr: Annotated[float, typer.Option("--refine-lr", help="AdamW learning rate of "
                                             "--refine.")] = 1e-4,
    refine_lam: Annotated[float | None, typer.Option(
        "--refine-lam", help="μ_data penalty weight during --refine (default: the training "
        "--lam; 0: NLL only).")] = None,
    tta: Annotated[bool, typer.Option(
        "--tta/--no-tta", help="Average the class probabilities over the crop's quarter "
        "turns and mirrors (8 forward passes per slice; not with --refine).")] = False,
    chunk_size: Annotated[int, typer.Option("--chunk-size", help="Slices per forward "
                                            "pass.")] = 16,
    selection: Annotated[str, typer.Option(
        "--selection", help="all-classes (slices with every class, as in the paper; needs "
        "ground truth) or roi (every slice with a non-empty ROI).")] = "all-classes",
    roi: Annotated[str, typer.Option(
        "--roi", help="Where the ROI comes from: gt (the ground truth), auto (predicted by "
        "--roi-run; data without ground truth is segmented, not scored) or a folder of "
        "<case>_roi.nii.gz masks.")] = "gt",
    roi_run: Annotated[Path | None, typer.Option(
        "--roi-run", help="ROI run folder (from `deepgmm roi train`) for --roi auto.")] = None,
    device: DeviceOpt = "auto",
    precision: Annotated[str | None, typer.Option(
        "--precision", help="fp32 or bf16 for the network's convolutions (default: the "
        "precision it was trained in).")] = None,
    figures: Annotated[bool, typer.Option("--figures/--no-figures", help="Write one PNG "
                                          "per slice.")] = True,
    progress: ProgressOpt = True,
    naming: Annotated[str, typer.Option(
        "--naming", help="File names of the maps: deepgmm (<case>_seg.nii.gz, _prob) or "
        "bids (<case>_dseg.nii.gz, _probseg).")] = "deepgmm",
    anatomy: AnatomyOpt = None,
    fusion: FusionOpt = None,
    recipe: RecipeOpt = "deepgmm",
    workers: WorkersOpt = None,
    scheduler: SchedulerOpt = None,
    resources: ResourcesOpt = None,
    threads: ThreadsOpt = 1,
    resume: ResumeOpt = False,
) -> None:
    """Segment cases with a trained network; prints a Dice table when ground truth exists.

    The slices are cut and normalised as in training (crop size and normalisation from the
    run's config.json)."""
    from deepgmm.data.myops import discover_cases
    from deepgmm.data.slices import make_batch
    from deepgmm.fit.checkpoint import read_config
    from deepgmm.fit.ensemble import check_ensemble, predict_ensemble
    from deepgmm.fit.predict import fusion_applies
    from deepgmm.options import PredictOptions
    from deepgmm.output_paths import check_output_folder
    from deepgmm.report.naming import map_names
    from deepgmm.report.outputs import write_segmentation
    from deepgmm.roi.source import load_with_roi, parse_roi_option

    options = PredictOptions(refine=refine, refine_lr=refine_lr, refine_lam=refine_lam,
                             tta=tta, chunk_size=chunk_size, device=device,
                             precision=precision, fusion=resolve_fusion(recipe, fusion))
    rule = resolve_anatomy(recipe, anatomy)
    source = parse_roi_option(roi, roi_run)
    map_names(naming)
    if patients and not root.exists():  # `--patients 101 102`: 102 became ROOT, ROOT a RUN
        from deepgmm.errors import InputError

        raise InputError(f"ROOT {str(root)!r} does not exist; after RUN... ROOT, give several "
                         f"--patients as one comma list (--patients "
                         f"{','.join([*patients, str(root)])})", params=("patients",))
    configs = [read_config(r) for r in runs]
    check_output_folder(out, [root, *runs, roi_run])
    check_ensemble(configs, runs)
    for run, cfg in zip(runs, configs, strict=True):
        if cfg.get("finished") is False:
            warnings.warn(f"run {str(run)!r} is unfinished (saved at epoch {cfg.get('epoch')} "
                          f"of at most {cfg.get('epochs')}; `deepgmm train ... --resume` "
                          "continues it): predicting with its last saved weights",
                          stacklevel=2)
    config = configs[0]
    seqs = tuple(config["sequences"])
    ids = patient_list(ctx, patients)
    cluster = cluster_options(workers, scheduler, resources, threads, resume)
    if ids is None:
        available = [c.case_id for c in discover_cases(root, seqs)]
        trained = set().union(*(c["train_patients"] for c in configs))
        ids = [c for c in available if c not in trained] or available
    if cluster is not None:
        from deepgmm.cohort import predict_cohort

        cohort = predict_cohort(runs, root, out, patients=ids, selection=selection, roi=roi,
                                roi_run=roi_run, figures=figures, progress=progress,
                                naming=naming, options=options.as_dict(), cluster=cluster,
                                anatomy=rule)
        _print_predicted(cohort.summary, out, figures)
        report_cohort(cohort)
        return
    volumes = load_with_roi(root, source, ids, sequences=seqs, progress=progress)
    slices = make_batch(volumes, selection=selection,
                        crop_size=tuple(config["crop_size"]),
                        normalisation=config["normalisation"])
    result = predict_ensemble(runs, slices, progress=progress, **options.as_dict())
    summary = write_segmentation(out, volumes, slices, result, matching="none",
                                 figures=figures, progress=progress,
                                 class_identity=config["mu_data"] is not None
                                 and float(config["lam"]) > 0,
                                 roi_source=source.as_dict(), naming=naming, anatomy=rule,
                                 run_options={
                                     "runs": runs, "ids": ids, "crop_size": config["crop_size"],
                                     "anatomy": rule,
                                     "fusion": options.fusion
                                     if fusion_applies(configs) else "none",
                                     "normalisation": config["normalisation"],
                                     "precision": precision or config.get("precision"),
                                     "training_seed": config.get("seed"),
                                     "training": {k: config.get(k) for k in (
                                         "model", "lam", "mu_data", "train_patients")}})
    _print_predicted(summary, out, figures)


def _print_predicted(summary: dict[str, Any], out: Path, figures: bool) -> None:
    """The Dice table (with ground truth), the clinical measures and where outputs are."""
    from deepgmm.report.clinical import format_measures
    from deepgmm.report.tables import format_dice_table

    if summary.get("dice") and any(v is not None for v in summary["dice"].values()):
        typer.echo(format_dice_table(summary))
    else:
        typer.echo(f"{summary['n_slices']} slices segmented (no ground truth: no Dice)")
    typer.echo(format_measures(summary["clinical"]))
    typer.echo(f"outputs: {out}  (results.csv, summary.json, NIfTI maps"
               f"{', figures/' if figures else ''})")
