"""Option parsing shared by the commands (not a command module itself)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from deepgmm.errors import InputError

if TYPE_CHECKING:
    from deepgmm.cohort import ClusterOptions, CohortRun

# How label maps follow from the probabilities (deepgmm.anatomy, deepgmm.recipe).
AnatomyOpt = Annotated[str | None, typer.Option(
    "--anatomy", help="How label maps follow from the class probabilities: lv-dice (one "
    "convex blood pool inside a smooth wall: cavity pixels labelled as wall become blood, "
    "blood not connected to the cavity becomes wall, the wall classes are smoothed over 2 mm "
    "and each slice's wall is labelled for the largest expected Dice of myocardium, edema "
    "and scar), lv (the same, each wall pixel its most likely class) or none (the most "
    "likely class). lv-dice and lv apply where the class order is known (fixed by μ_data, "
    "or clusters assigned by a --matching rule); elsewhere the map is the most likely "
    "cluster. Default: the --recipe's.")]
RecipeOpt = Annotated[str, typer.Option(
    "--recipe", help="deepgmm (anatomy lv-dice, fusion labelled; train: normalisation roi) or "
    "published (the paper's method: anatomy none, fusion none; train: normalisation crop). "
    "Options given explicitly win.")]
FusionOpt = Annotated[str | None, typer.Option(
    "--fusion", help="labelled (multiply the class probabilities by the class Gaussians of "
    "the labelled slices behind μ_data, which `deepgmm train` stores in the run and `deepgmm "
    "mu-data` in the file; where μ_data fixes the class order) or none (as fitted). "
    "Default: the --recipe's.")]


def resolve_anatomy(recipe: str, anatomy: str | None) -> str:
    """The anatomy rule of ``--anatomy``, or the ``--recipe``'s when it is not given."""
    from deepgmm.recipe import resolve_anatomy as resolve

    return resolve(recipe, anatomy)


def resolve_fusion(recipe: str, fusion: str | None) -> str:
    """The fusion of ``--fusion``, or the ``--recipe``'s when it is not given."""
    from deepgmm.recipe import resolve_fusion as resolve

    return resolve(recipe, fusion)


# Per-case runs (deepgmm.cohort): where the cases run and whether to resume.
SchedulerOpt = Annotated[str | None, typer.Option(
    "--scheduler", help="Run every case as a task on the Dask scheduler at this address "
    "(e.g. tcp://host:8786; start it with `dask scheduler`, workers with `dask worker "
    "ADDRESS`). OUT must be on a file system every worker sees.")]
WorkersOpt = Annotated[int | None, typer.Option(
    "--workers", help="Run every case as a task on a local Dask cluster of N "
    "single-threaded worker processes.")]
ResourcesOpt = Annotated[str | None, typer.Option(
    "--resources", help="Dask resources every case needs, e.g. GPU=1: cases go only to "
    "workers started with `dask worker ... --resources GPU=1` (with --workers, each local "
    "worker declares them).")]
ThreadsOpt = Annotated[int, typer.Option(
    "--threads", help="With --workers, --scheduler or --resume: torch CPU threads per "
    "case (per worker).")]
ResumeOpt = Annotated[bool, typer.Option(
    "--resume/--no-resume", help="One case at a time into OUT/cases/<case>/ (serially "
    "unless --workers or --scheduler), skipping cases complete from an earlier run with "
    "the same options and input files (checked by SHA-256).")]


def cluster_options(workers: int | None, scheduler: str | None, resources: str | None,
                    threads: int, resume: bool) -> ClusterOptions | None:
    """The per-case run the options ask for, or ``None`` (one process, one batch) when
    none of ``--workers``, ``--scheduler``, ``--resume``, ``--resources`` is given."""
    if workers is None and scheduler is None and not resume and resources is None:
        return None
    from deepgmm.cohort import ClusterOptions
    from deepgmm.cohort.cluster import parse_resources

    options = ClusterOptions(workers=workers, scheduler=scheduler,
                             resources=parse_resources(resources), threads=threads,
                             resume=resume)
    options.check()
    return options


def report_cohort(run: CohortRun, echo: Any = typer.echo) -> None:
    """Print what a per-case run did; exit with code 4 when some cases failed (their
    outputs are missing, the other cases' are written)."""
    resumed, done = run.ids("resumed"), run.ids("done")
    line = f"cases: {len(done)} segmented"
    if resumed:
        line += f", {len(resumed)} complete from an earlier run (resumed)"
    skipped = run.ids("skipped")
    if skipped:
        line += f", {len(skipped)} skipped (empty ROI): {', '.join(skipped)}"
    echo(line)
    for outcome in run.failed:
        echo(f"error: case {outcome.case_id} failed: {outcome.error}", err=True)
    if run.failed:
        echo(f"error: {len(run.failed)} of {len(run.outcomes)} case(s) failed "
             f"({', '.join(o.case_id for o in run.failed)}); the others are in the outputs "
             "(summary.json lists failed_cases)", err=True)
        raise typer.Exit(EXIT_SOME_CASES_FAILED)


EXIT_SOME_CASES_FAILED = 4

# Allows the documented form ``--patients 109 114`` (several values after one flag) as well
# as ``--patients 109 --patients 114`` and ``--patients 109,114``.
MULTI_VALUE_CONTEXT = {"allow_extra_args": True, "ignore_unknown_options": False}


def split_ids(values: list[str] | None) -> list[str] | None:
    """``["109,114", "117"]`` -> ``["109", "114", "117"]``; ``None`` stays ``None``."""
    if not values:
        return None
    return [part.strip() for v in values for part in v.split(",") if part.strip()]


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def stray_arguments(ctx: typer.Context) -> list[str]:
    """The command-line values that are neither a declared argument, an option's value nor
    a loose value following a repeatable option (``--patients 101 102``), in order.

    ``deepgmm fit ROOT extra --patients 101``: ``["extra"]``. Needs the raw argument list
    that :class:`deepgmm.cli.RecordingCommand` keeps (none: ``[]``); commands with a
    variadic argument are not checked (every loose value is theirs).
    """
    from deepgmm.cli import RAW_ARGS

    raw = ctx.meta.get(RAW_ARGS)
    if raw is None:
        return []
    arguments = [p for p in ctx.command.params if p.param_type_name == "argument"]
    if any(a.nargs != 1 for a in arguments):
        return []
    takes_value: dict[str, bool] = {}
    repeatable: set[str] = set()
    for p in ctx.command.params:
        if p.param_type_name == "option":
            for opt in (*p.opts, *p.secondary_opts):
                takes_value[opt] = not p.is_flag and not p.count
                if p.multiple:
                    repeatable.add(opt)
    strays: list[str] = []
    n_positional = 0
    last: str | None = None  # the option whose value or loose values come now
    tokens = iter(raw)
    for token in tokens:
        if token == "--":
            break
        if token.startswith("-") and len(token) > 1 and not _is_number(token):
            opt, eq, _ = token.partition("=")
            if takes_value.get(opt, False) and not eq:
                next(tokens, None)  # its value
            last = opt
            continue
        if n_positional < len(arguments):
            n_positional += 1
            last = None
        elif last not in repeatable:
            strays.append(token)
    return strays


def patient_list(ctx: typer.Context, values: list[str] | None,
                 flag: str = "--patients") -> list[str] | None:
    """Merge a repeatable option with the loose values that followed it on the command line.

    Args:
        ctx: the command's context (extra arguments land in ``ctx.args``).
        values: what typer parsed for the option (``None`` when absent).
        flag: the option's name, for messages.

    Returns:
        The ids in the order given, or ``None`` when the option was not used.
    """
    strays = stray_arguments(ctx)
    if strays:
        raise InputError(f"unexpected argument(s) {' '.join(strays)!r} (only the options "
                         f"that take several values, such as {flag}, take loose values "
                         "after them)")
    extra = list(ctx.args)
    if not values:
        if extra:
            raise InputError(f"unexpected argument(s) {' '.join(extra)!r}")
        return None
    ids = split_ids([*values, *extra])
    if not ids:
        raise InputError(f"{flag} needs at least one case id")
    return ids


def parse_named_files(values: list[str], flag: str) -> dict[str, str]:
    """Parse ``NAME=path`` pairs (``--image C0=a.nii.gz``) into an ordered dict."""
    named: dict[str, str] = {}
    for value in values:
        name, sep, path = value.partition("=")
        name, path = name.strip(), path.strip()
        if not sep or not name or not path:
            raise InputError(f"{flag} expects NAME=FILE (e.g. {flag} T2=t2.nii.gz), got {value!r}")
        if name in named:
            raise InputError(f"{flag} names the sequence {name!r} twice")
        named[name] = path
    return named
