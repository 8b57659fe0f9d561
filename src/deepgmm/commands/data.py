"""Data commands: ``phantom`` (write the synthetic data set), ``info`` (what a data folder
holds), ``mu-data`` (class means for the μ_data regulariser) and ``demo``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from deepgmm.cli import command
from deepgmm.commands._options import MULTI_VALUE_CONTEXT, patient_list, split_ids
from deepgmm.errors import InputError

DEMO_CROP = 64
"""Crop of the demo batch: 96 mm at the phantom's 1.5 mm spacing."""


@command("phantom")
def phantom_command(
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder to write the phantom "
                                          "into (created; phantom files already there are "
                                          "replaced).")],
    n_cases: Annotated[int, typer.Option("--cases", help="Number of cases (ids 101, 102, "
                                         "...; at most 1000).")] = 4,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (0 to 2**63 - 1); the data "
                                      "depend only on it and the sizes.")] = 0,
    n_slices: Annotated[int, typer.Option("--slices", help="Short-axis slices per "
                                          "case (at most 64).")] = 3,
    size: Annotated[int, typer.Option("--size", help="In-plane size in voxels (1.5 mm; 48 "
                                      "to 1024).")] = 128,
    layout: Annotated[str, typer.Option(
        "--layout", help="myops (OUT/train25/, OUT/train25_myops_gd/) or nnunet "
        "(OUT/dataset.json, imagesTs/<case>_000<c>.nii.gz, labelsTs/, rois/).")] = "myops",
) -> None:
    """Write a synthetic cardiac phantom (C0, DE, T2 + ground truth).

    MyoPS layout: files go to OUT/train25/ and OUT/train25_myops_gd/; nnunet layout:
    OUT/dataset.json, OUT/imagesTs/, OUT/labelsTs/ and OUT/rois/.
    """
    from deepgmm.data.phantom import MAX_SIZE, write_phantom

    if not 48 <= size <= MAX_SIZE:
        raise InputError(f"--size must be at least 48 and at most {MAX_SIZE} voxels, got "
                         f"{size}")

    root = write_phantom(out_dir, n_cases=n_cases, seed=seed, shape=(size, size),
                         n_slices=n_slices, layout=layout)
    typer.echo(f"wrote {n_cases} phantom case(s), {n_slices} slice(s) of {size} x {size} "
               f"voxels each, to {root}")


def _fmt_triple(values: tuple[float, ...] | tuple[int, ...], fmt: str) -> str:
    return " x ".join(format(v, fmt) for v in values)


def describe_data(root: Path, patients: list[str] | None = None,
                  problems: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """One dict per case below ``root``: id, sequences, shape, spacing, slice counts, classes.

    Cases with ground truth are fully loaded (same-space and label checks included); cases
    without it (MyoPS test data) have their images loaded and checked. With ``problems``,
    a case that is incomplete or does not load is recorded there (case id -> message) and
    the others go on; without, its error is raised.
    """
    from deepgmm.data.dataset import select_cases
    from deepgmm.data.myops import discover_cases

    rows: list[dict[str, Any]] = []
    report = None if problems is None else problems.__setitem__
    found = discover_cases(root, patients=patients, on_problem=report)
    wanted = None if patients is None else [p for p in patients if p not in (problems or {})]
    for case in select_cases(found, wanted) if wanted != [] else []:
        try:
            rows.append(_describe_case(case))
        except InputError as err:
            if problems is None:
                raise
            problems[case.case_id] = str(err)
    return rows


def _describe_case(case: Any) -> dict[str, Any]:
    """The :func:`describe_data` row of one case (``CaseFiles``)."""
    import numpy as np

    from deepgmm.data.dataset import case_label_summary, load_case
    from deepgmm.data.nifti import check_same_space, load_nifti
    from deepgmm.types import CLASS_NAMES

    row: dict[str, Any] = {"case": case.case_id, "sequences": list(case.images)}
    if case.labels is not None:
        vol = load_case(case)
        info = case_label_summary(vol)
        names = ("background", *CLASS_NAMES)
        row.update(shape=vol.shape, spacing=vol.zooms, n_slices=info["n_slices"],
                   roi_slices=info["roi_slices"],
                   all_class_slices=info["all_class_slices"],
                   classes=[names[c] for c in info["classes"]])  # type: ignore[attr-defined]
    else:
        vols = [load_nifti(p, what=f"{s} image") for s, p in case.images.items()]
        check_same_space(vols)
        row.update(shape=vols[0].shape, spacing=vols[0].zooms, n_slices=vols[0].shape[2],
                   roi_slices=None, all_class_slices=None, classes=None)
    row["spacing"] = tuple(float(np.round(s, 4)) for s in row["spacing"])
    return row


@command("info", context_settings=MULTI_VALUE_CONTEXT)
def info_command(
    ctx: typer.Context,
    root: Annotated[Path, typer.Argument(help="Folder with <prefix>_<n>_{C0,DE,T2}.nii.gz "
                                         "images and <prefix>_<n>_gd.nii.gz labels (searched "
                                         "recursively).")],
    patients: Annotated[list[str] | None, typer.Option(
        "--patients", help="Only these case ids, e.g. --patients 101 102.")] = None,
) -> None:
    """Describe a data folder: sequences, grid, spacing, slices and classes per case.

    The totals include the number of slices where all four classes occur.
    """
    problems: dict[str, str] = {}
    rows = describe_data(root, patient_list(ctx, patients), problems)
    header = (f"{'case':>6}  {'sequences':<12} {'shape':<15} {'spacing (mm)':<22} "
              f"{'slices':>6} {'ROI':>4} {'all-class':>9}  classes")
    typer.echo(header)
    for r in rows:
        roi = "-" if r["roi_slices"] is None else str(r["roi_slices"])
        allc = "-" if r["all_class_slices"] is None else str(r["all_class_slices"])
        classes = "no ground truth" if r["classes"] is None else " ".join(r["classes"])
        typer.echo(f"{r['case']:>6}  {' '.join(r['sequences']):<12} "
                   f"{_fmt_triple(r['shape'], 'd'):<15} "
                   f"{_fmt_triple(r['spacing'], '.3f'):<22} {r['n_slices']:>6} {roi:>4} "
                   f"{allc:>9}  {classes}")
    labelled = [r for r in rows if r["classes"] is not None]
    total = sum(r["n_slices"] for r in rows)
    line = f"{len(rows)} patients, {total} slices"
    if labelled:
        line += (f"; with ground truth: {len(labelled)} patients, "
                 f"{sum(r['roi_slices'] for r in labelled)} slices with ROI, "
                 f"{sum(r['all_class_slices'] for r in labelled)} all-class slices")
    typer.echo(line)
    for message in problems.values():
        typer.echo(f"not described: {message}")
    if problems:
        raise InputError(f"{len(problems)} case(s) below {str(root)!r} could not be read "
                         f"(the others are listed above): {'; '.join(problems.values())}")


@command("mu-data", context_settings=MULTI_VALUE_CONTEXT)
def mu_data_command(
    ctx: typer.Context,
    root: Annotated[Path, typer.Argument(help="Data folder (MyoPS layout, with ground "
                                         "truth).")],
    path: Annotated[Path, typer.Option("--out", "-o", help="JSON file to write.")],
    patients: Annotated[list[str] | None, typer.Option(
        "--patients", help="Draw from these case ids only, e.g. --patients 101 102 "
        "(default: all).")] = None,
    exclude: Annotated[list[str] | None, typer.Option(
        "--exclude", help="Leave these case ids out, e.g. the test patients: "
        "--exclude 109 114 117 120 122 (with --patients too, give comma lists: "
        "--exclude 109,114).")] = None,
    n_slices: Annotated[int, typer.Option("--n-slices", help="Number of random labelled "
                                          "slices to draw.")] = 10,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the draw.")] = 42,
    selection: Annotated[str, typer.Option(
        "--selection", help="Slices to draw from: all-classes or roi.")] = "all-classes",
    crop_size: Annotated[int, typer.Option("--crop", help="Square crop size (as used for "
                                           "segmenting: normalisation depends on it).")
                         ] = 160,
    normalisation: Annotated[str, typer.Option(
        "--normalisation", help="Z-score per slice over the crop or over the roi (as used "
        "for segmenting).")] = "crop",
) -> None:
    """Compute μ_data, the class means used by --mu-data, from labelled slices.

    μ_data is the mean normalised intensity of each class (blood, myocardium, edema, scar)
    in each sequence, from the ground truth of N random slices, written as JSON.
    """
    from deepgmm.data.dataset import load_dataset
    from deepgmm.data.mu_data import compute_mu_data, save_mu_data
    from deepgmm.data.slices import make_batch
    from deepgmm.output_paths import check_output_file
    from deepgmm.types import CLASS_NAMES

    check_output_file(path, [root], what="μ_data file")
    if exclude and ctx.args:
        if patients:
            raise InputError("with both --patients and --exclude, give each one's ids as a "
                             "comma list (--patients 101,102 --exclude 109,114), got loose "
                             f"argument(s) {' '.join(ctx.args)!r}")
        exclude = [*exclude, *ctx.args]  # --exclude 109 114: the loose ids are exclude's
        ctx.args.clear()
    ids = patient_list(ctx, patients)
    volumes = load_dataset(root, ids, exclude=split_ids(exclude))
    batch = make_batch(volumes, selection=selection, crop_size=(crop_size, crop_size),
                       normalisation=normalisation, require_labels=True)
    mu = compute_mu_data(batch, n_slices=n_slices, seed=seed)
    path = save_mu_data(mu, batch.sequences, path, crop_size=batch.crop_size,
                        normalisation=batch.normalisation)
    typer.echo(f"μ_data from {min(n_slices, len(batch))} of {len(batch)} slices "
               f"({len(volumes)} patients), seed {seed}:")
    typer.echo(f"{'class':<12}" + "".join(f"{s:>9}" for s in batch.sequences))
    for name, row in zip(CLASS_NAMES, mu, strict=True):
        typer.echo(f"{name:<12}" + "".join(f"{v:>9.3f}" for v in row))
    typer.echo(f"written to {path}")


DEMO_METHODS = ("em-svgmm", "deepsvg")
"""Methods the demo runs on the phantom, each written to ``OUT/<method>/``."""


def run_demo(out: Path, *, n_cases: int = 4, seed: int = 0, crop: int = DEMO_CROP,
             methods: tuple[str, ...] = DEMO_METHODS, max_iter: int = 200,
             progress: bool = True) -> dict[str, Any]:
    """The demo: build the phantom in ``out/phantom``, segment it with each method.

    Every method's outputs (NIfTI label and probability maps, ``results.csv``,
    ``summary.json``, figures) go to ``out/<method>``; Dice uses Hungarian matching against
    the phantom's ground truth.

    Returns:
        ``phantom`` (folder), ``cases``, ``slices``, ``batch_shape`` ``(B, M, H, W)``,
        ``sequences``, ``class_fractions`` (share of each class in the ROI) and ``summaries``
        (method -> the summary written to ``out/<method>/summary.json``).
    """
    import shutil

    import numpy as np

    from deepgmm.data.dataset import load_dataset
    from deepgmm.data.phantom import write_phantom
    from deepgmm.data.slices import make_batch
    from deepgmm.options import FitOptions, method_options
    from deepgmm.output_paths import check_output_folder
    from deepgmm.params import check_seed
    from deepgmm.pipeline import run_method, write_result
    from deepgmm.types import CLASS_NAMES

    # everything is checked before anything is written
    check_seed(seed, caller="run_demo")
    options = {method: method_options(method, {"seed": seed, "init": "kmeans"}
                                      if method.startswith("em-") else
                                      {"seed": seed, "max_iter": max_iter,
                                       "min_iter": min(FitOptions.min_iter, max_iter)},
                                      caller="run_demo")
               for method in methods}
    out = Path(out)
    check_output_folder(out, replace=False, what="demo output")
    check_output_folder(out / "phantom", replace=False, what="demo output")
    for method in methods:
        check_output_folder(out / method)
    created = [p for p in (out, out / "phantom", *(out / m for m in methods))
               if not p.exists()]
    try:
        root = write_phantom(out / "phantom", n_cases=n_cases, seed=seed)
        volumes = load_dataset(root)
        batch = make_batch(volumes, crop_size=(crop, crop), require_labels=True)
        assert batch.labels is not None  # require_labels
        labels = batch.labels[batch.roi].numpy()
        counts = np.bincount(labels, minlength=len(CLASS_NAMES) + 1)[1:]
        summaries = {}
        for method in methods:
            result = run_method(batch, method, options=options[method], progress=progress)
            summaries[method] = write_result(out / method, volumes, batch, result,
                                             matching="hungarian", progress=progress)
    except BaseException:  # nothing partial: remove what this demo created
        for path in reversed(created):
            shutil.rmtree(path, ignore_errors=True)
        raise
    return {
        "phantom": str(root),
        "cases": [v.case_id for v in volumes],
        "slices": len(batch),
        "batch_shape": tuple(batch.image.shape),
        "sequences": batch.sequences,
        "class_fractions": dict(zip(CLASS_NAMES, (counts / counts.sum()).tolist(),
                                    strict=True)),
        "summaries": summaries,
    }


@command("demo")
def demo_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (the phantom is "
                                      "written to OUT/phantom, each method's results to "
                                      "OUT/<method>).")] = Path("demo-output"),
    seed: Annotated[int, typer.Option("--seed", help="Seed of the phantom and the "
                                      "methods.")] = 0,
    max_iter: Annotated[int, typer.Option("--max-iter", help="Most deepSVG iterations per "
                                          "slice.")] = 200,
    progress: Annotated[bool, typer.Option("--progress/--no-progress",
                                           help="Show progress bars.")] = True,
) -> None:
    """Segment the built-in phantom with EM-SVGMM and deepSVG and print a Dice table."""
    from deepgmm.types import CLASS_NAMES

    s = run_demo(out, seed=seed, max_iter=max_iter, progress=progress)
    b, m, h, w = s["batch_shape"]
    typer.echo(f"phantom: {len(s['cases'])} cases, {b} slices, {m} sequences "
               f"({', '.join(s['sequences'])}), {h} x {w} crops, in {s['phantom']}")
    typer.echo("Dice (Hungarian matching against the phantom's ground truth):")
    typer.echo(f"{'method':<10}" + "".join(f"{c:>12}" for c in CLASS_NAMES)
               + f"{'s/slice':>10}")
    for method, summary in s["summaries"].items():
        dice = "".join(f"{summary['dice'][c]:>12.3f}" for c in CLASS_NAMES)
        typer.echo(f"{method:<10}{dice}{summary['seconds_per_slice']:>10.3f}")
    typer.echo("figures: " + ", ".join(f"{Path(out) / m / 'figures'}" for m in s["summaries"]))
