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

NOISE_FRACTION = 0.06
"""Default noise of ``deepgmm phantom`` (:data:`deepgmm.data.phantom.NOISE_FRACTION`; kept
here so the CLI starts without importing SciPy)."""

DEMO_NOISE = 0.15
"""Rician noise of the demo phantom, as a fraction of the blood intensity (the default
phantom has 0.06): noisy enough that pixel-wise intensity models make visible errors, as
they do on real LGE and T2 images."""


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
    noise: Annotated[float, typer.Option("--noise", help="Rician noise sd as a fraction of "
                                         "the blood intensity (the demo uses "
                                         f"{DEMO_NOISE}).")] = NOISE_FRACTION,
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
                         n_slices=n_slices, noise=noise, layout=layout)
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
    from deepgmm.mixture.fusion import fit_class_gaussians
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
    try:  # the same slices' class Gaussians, for --fusion labelled (deepgmm.mixture.fusion)
        gaussians = fit_class_gaussians(batch, n_slices=n_slices, seed=seed).to_dict()
    except InputError as err:
        typer.echo(f"note: no class Gaussians stored ({err}): --fusion will not apply")
        gaussians = None
    path = save_mu_data(mu, batch.sequences, path, crop_size=batch.crop_size,
                        normalisation=batch.normalisation, class_gaussians=gaussians)
    typer.echo(f"μ_data from {min(n_slices, len(batch))} of {len(batch)} slices "
               f"({len(volumes)} patients), seed {seed}:")
    typer.echo(f"{'class':<12}" + "".join(f"{s:>9}" for s in batch.sequences))
    for name, row in zip(CLASS_NAMES, mu, strict=True):
        typer.echo(f"{name:<12}" + "".join(f"{v:>9.3f}" for v in row))
    typer.echo(f"written to {path}")


DEMO_METHODS = ("em-svgmm", "deepsvg")
"""Methods the demo compares on the held-out phantom cases, each written to
``OUT/<method>/``."""

DEMO_CASES = 8
"""Phantom cases of the demo (ids 101..108), 3 slices each."""

DEMO_TEST_CASES = 2
"""The last two cases are held out and segmented by both methods; the others train the
network."""

DEMO_MU_SLICES = 5
"""Labelled training slices whose ground truth gives μ_data (the only labels used)."""

DEMO_EPOCHS = 30
"""Most training epochs of the demo network."""

DEMO_TRAINING = {"base_filters": 16, "depth": 4, "batch_size": 2}
"""Training settings of the demo that differ from ``deepgmm train``'s: a U-Net with half the
published channels (training takes seconds, not minutes) and two slices per optimiser step
(twice the steps per epoch on the 18 training slices)."""


def run_demo(out: Path, *, n_cases: int = DEMO_CASES, seed: int = 0,
             epochs: int = DEMO_EPOCHS, crop: int = DEMO_CROP,
             progress: bool = True) -> dict[str, Any]:
    """The demo: deepSVG trained on phantom cases against EM-SVGMM on held-out ones.

    1. Write a noisy phantom (``n_cases`` cases, noise :data:`DEMO_NOISE`) to
       ``out/phantom``; the last :data:`DEMO_TEST_CASES` are held out.
    2. EM-SVGMM (k-means start) segments each held-out slice on its own; its clusters are
       assigned to the classes with the ground truth as an oracle (Hungarian matching).
    3. deepSVG: one U-Net trained (λ = 1) on the all-class slices of the other cases,
       μ_data from the ground truth of
       :data:`DEMO_MU_SLICES` of those slices; the run folder is ``out/deepsvg-train``.
    4. The trained network segments the held-out slices in one forward pass; μ_data fixed
       its class order, so it is scored without any matching.

    Every method's outputs (NIfTI maps, ``results.csv``, ``summary.json``, ``report.html``,
    figures) go to ``out/<method>``.

    Returns:
        ``phantom`` (folder), ``train_cases``, ``test_cases``, ``train_slices``, ``slices``
        (held-out), ``batch_shape`` ``(B, M, H, W)`` of the held-out batch, ``sequences``,
        ``class_fractions`` (share of each class in the held-out ROIs), ``mu_data``
        ``(K, M)``, ``training`` (epochs, converged, seconds) and ``summaries`` (method ->
        the summary written to ``out/<method>/summary.json``).
    """
    import shutil

    import numpy as np

    from deepgmm._atomic import atomic_dir
    from deepgmm.data.dataset import load_dataset
    from deepgmm.data.mu_data import compute_mu_data
    from deepgmm.data.phantom import write_phantom
    from deepgmm.data.slices import make_batch
    from deepgmm.fit.predict import predict
    from deepgmm.fit.train import train_network
    from deepgmm.options import TrainOptions
    from deepgmm.output_paths import check_output_folder
    from deepgmm.params import check_seed
    from deepgmm.pipeline import run_method, write_result
    from deepgmm.report.html import REPORT_HTML, render_report
    from deepgmm.types import CLASS_NAMES

    # everything is checked before anything is written
    check_seed(seed, caller="run_demo")
    TrainOptions.create("run_demo", model="deepsvg", epochs=epochs,
                        min_epochs=min(epochs, TrainOptions().min_epochs), seed=seed)
    out = Path(out)
    if n_cases <= DEMO_TEST_CASES:
        raise InputError(f"the demo needs more than {DEMO_TEST_CASES} cases (some to train "
                         f"on, {DEMO_TEST_CASES} held out), got {n_cases}",
                         params=("n_cases",))
    run_dir = out / "deepsvg-train"
    check_output_folder(out, replace=False, what="demo output")
    check_output_folder(out / "phantom", replace=False, what="demo output")
    check_output_folder(run_dir, replace=False, what="demo output")
    for method in DEMO_METHODS:
        check_output_folder(out / method)
    created = [p for p in (out, out / "phantom", run_dir, *(out / m for m in DEMO_METHODS))
               if not p.exists()]
    try:
        root = write_phantom(out / "phantom", n_cases=n_cases, seed=seed, noise=DEMO_NOISE)
        volumes = load_dataset(root)
        train_volumes = volumes[:-DEMO_TEST_CASES]
        test_volumes = volumes[-DEMO_TEST_CASES:]
        size = (crop, crop)
        test = make_batch(test_volumes, crop_size=size, require_labels=True)
        assert test.labels is not None  # require_labels
        labels = test.labels[test.roi].numpy()
        counts = np.bincount(labels, minlength=len(CLASS_NAMES) + 1)[1:]

        summaries = {}
        em_options = {"seed": seed, "init": "kmeans"}
        em = run_method(test, "em-svgmm", options=em_options, progress=progress)
        summaries["em-svgmm"] = write_result(out / "em-svgmm", test_volumes, test, em,
                                             matching="hungarian", progress=progress,
                                             run_options={"model": "em-svgmm", **em_options})

        train = make_batch(train_volumes, crop_size=size, require_labels=True)
        mu = compute_mu_data(train, n_slices=DEMO_MU_SLICES, seed=42)
        with atomic_dir(run_dir) as tmp:
            trained = train_network(train, model="deepsvg", lam=1.0, mu_data=mu,
                                    epochs=epochs,
                                    min_epochs=min(epochs, TrainOptions().min_epochs),
                                    seed=seed, run_dir=tmp, progress=progress,
                                    labelled_slices=DEMO_MU_SLICES, **DEMO_TRAINING)
            render_report(tmp, tmp / REPORT_HTML, shown_as=run_dir)
        result = predict(run_dir, test, fusion="labelled")  # the deepgmm recipe
        train_ids = [v.case_id for v in train_volumes]
        summaries["deepsvg"] = write_result(
            out / "deepsvg", test_volumes, test, result, matching="none",
            class_identity=True, progress=progress, run_options={"runs": [run_dir],
                                                                 "fusion": "labelled",
                                                                 "training": {
                "model": "deepsvg", "lam": 1.0, "mu_data": mu.tolist(), "epochs": epochs,
                "train_patients": train_ids, **DEMO_TRAINING}})
    except BaseException:  # nothing partial: remove what this demo created
        for path in reversed(created):
            shutil.rmtree(path, ignore_errors=True)
        raise
    return {
        "phantom": str(root),
        "train_cases": train_ids,
        "test_cases": [v.case_id for v in test_volumes],
        "train_slices": len(train),
        "slices": len(test),
        "batch_shape": tuple(test.image.shape),
        "sequences": test.sequences,
        "class_fractions": dict(zip(CLASS_NAMES, (counts / counts.sum()).tolist(),
                                    strict=True)),
        "mu_data": mu,
        "training": {"epochs": trained.n_epochs, "converged": trained.converged,
                     "seconds": trained.seconds},
        "summaries": summaries,
    }


@command("demo")
def demo_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (the phantom is "
                                      "written to OUT/phantom, the trained network to "
                                      "OUT/deepsvg-train, each method's results to "
                                      "OUT/<method>).")] = Path("demo-output"),
    seed: Annotated[int, typer.Option("--seed", help="Seed of the phantom and the "
                                      "methods.")] = 0,
    epochs: Annotated[int, typer.Option("--epochs", help="Most training epochs of the "
                                        "deepSVG network.")] = DEMO_EPOCHS,
    progress: Annotated[bool, typer.Option("--progress/--no-progress",
                                           help="Show progress bars.")] = True,
) -> None:
    """Train deepSVG on phantom cases, segment held-out ones beside EM-SVGMM, print Dice.

    The network learns from the images of six cases and the labels of five slices (μ_data);
    two more cases are held out.
    EM-SVGMM fits each held-out slice alone and gets its clusters matched to the classes
    with the ground truth.
    """
    from deepgmm.types import CLASS_NAMES

    s = run_demo(out, seed=seed, epochs=epochs, progress=progress)
    b, m, h, w = s["batch_shape"]
    t = s["training"]
    typer.echo(f"phantom: {len(s['train_cases']) + len(s['test_cases'])} cases, {m} "
               f"sequences ({', '.join(s['sequences'])}), {h} x {w} crops, in {s['phantom']}")
    typer.echo(f"deepSVG trained on cases {', '.join(s['train_cases'])} ({s['train_slices']} "
               f"slices; μ_data from {DEMO_MU_SLICES} labelled slices): {t['epochs']} epochs, "
               f"{t['seconds']:.1f} s")
    typer.echo(f"Dice on the {b} slices of held-out cases {', '.join(s['test_cases'])} "
               "(EM-SVGMM: clusters matched to the truth; deepSVG: no matching):")
    typer.echo(f"{'method':<10}" + "".join(f"{c:>12}" for c in CLASS_NAMES)
               + f"{'s/slice':>10}")
    for method, summary in s["summaries"].items():
        dice = "".join(f"{summary['dice'][c]:>12.3f}" for c in CLASS_NAMES)
        typer.echo(f"{method:<10}{dice}{summary['seconds_per_slice']:>10.3f}")
    typer.echo("reports: " + ", ".join(f"{Path(out) / m / 'report.html'}"
                                        for m in s["summaries"]))
