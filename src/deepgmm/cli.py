"""The ``deepgmm`` command line: one typer app.

Heavy imports (torch, nibabel) happen inside the commands so that ``--help`` is instant.
Library errors (:class:`deepgmm.errors.DeepGMMError`) become one line ``error: ...`` on
stderr, with the library's parameter names replaced by the command's flags (``max_iter`` ->
``--max-iter``; a command's function parameters carry the library's names, so the flag of a
name is the option declared for it). Exit codes: 2 for bad input (``InputError``,
``CheckpointError``), 3 for a fit that could not be carried out on valid input
(``FitError``: divergence, out of memory), 4 for a per-case run in which some cases
failed (the others are written; ``summary.json`` lists ``failed_cases``). An OS error that
means a path could not be written (read-only folder, full disk, no permission) is bad input
too: one line naming the path and the reason, exit code 2. Nothing else is caught, so a
real bug still shows its traceback.
"""

from __future__ import annotations

import functools
import re
import sys
import warnings
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import typer
from typer.core import TyperCommand

if TYPE_CHECKING:
    from deepgmm.errors import DeepGMMError

EXIT_BAD_INPUT = 2
EXIT_FIT_FAILED = 3

app = typer.Typer(
    name="deepgmm",
    help="Unsupervised segmentation of multi-sequence MR images with deep Gaussian mixtures.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Unsupervised segmentation of multi-sequence MR images with deep Gaussian mixtures."""
    from deepgmm.allocator import tune_cpu_allocator

    tune_cpu_allocator()  # faster CPU work; DEEPGMM_MALLOC_TUNING=0 keeps glibc's defaults


F = TypeVar("F", bound=Callable[..., Any])


def _current_context() -> typer.Context | None:
    """The click context of the running command (typer bundles click as ``typer._click``;
    None where that is unavailable, and provenance then records no command line)."""
    try:
        from typer._click.globals import get_current_context
    except ImportError:  # a typer that depends on click instead of bundling it
        try:
            from click import get_current_context
        except ImportError:
            return None
    return get_current_context(silent=True)


def _show_warning(message: Warning | str, category: type[Warning], *_: Any,
                  **__: Any) -> None:
    """Warnings on the terminal as one line (``warning: ...``), without source lines."""
    typer.echo(f"warning: {message}", err=True)


def command_flags(func: Callable[..., Any]) -> dict[str, str]:
    """Parameter name -> how the command line spells it: ``{"max_iter": "--max-iter",
    "root": "ROOT"}`` (the first long flag of an option, the name of an argument), read from
    the ``Annotated`` typer declarations of the command function ``func``."""
    import typing

    from typer.models import ArgumentInfo, OptionInfo

    flags: dict[str, str] = {}
    for name, hint in typing.get_type_hints(func, include_extras=True).items():
        for info in getattr(hint, "__metadata__", ()):
            if isinstance(info, OptionInfo):
                # with Annotated, typer takes the first declaration as the "default"
                first = [info.default] if isinstance(info.default, str) else []
                decls = [d.split("/")[0] for d in [*first, *(info.param_decls or ())]
                         if d.startswith("-")]
                longs = [d for d in decls if d.startswith("--")]
                flags[name] = (longs or decls or ["--" + name.replace("_", "-")])[0]
            elif isinstance(info, ArgumentInfo):
                flags[name] = info.metavar or name.upper()
    return flags


_SKLEARN_FORM = re.compile(r"The '(\w+)' parameter of [\w.]+ must be")


def flag_message(err: DeepGMMError, flags: Mapping[str, str]) -> str:
    """The message of ``err`` with the parameters it names (``err.params``) written as the
    command's flags; names without a flag stay as they are.

    Example: ``The 'max_iter' parameter of fit_slices must be an int in the range [1, inf).
    Got 0 instead.`` -> ``--max-iter must be an int in the range [1, inf). Got 0 instead.``
    """
    text = _SKLEARN_FORM.sub(lambda m: f"{flags.get(m[1], repr(m[1]))} must be", str(err))
    for name in sorted(set(err.params), key=len, reverse=True):
        if name in flags:
            word = re.escape(name)
            text = re.sub(rf"'{word}'|(?<![\w\-.']){word}(?![\w'])", flags[name], text)
    return text


def exit_code(err: DeepGMMError) -> int:
    """3 for a :class:`~deepgmm.errors.FitError`, 2 for any other library error."""
    from deepgmm.errors import FitError

    return EXIT_FIT_FAILED if isinstance(err, FitError) else EXIT_BAD_INPUT


RAW_ARGS = "deepgmm.raw_args"
"""Key of ``ctx.meta`` holding a command's arguments as given (before parsing)."""


class RecordingCommand(TyperCommand):
    """A typer command that keeps its raw argument list in ``ctx.meta[RAW_ARGS]``, so that
    the loose values of ``--patients 101 102`` can be told from a stray argument
    (:func:`deepgmm.commands._options.stray_arguments`)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        ctx.meta[RAW_ARGS] = list(args)
        return super().parse_args(ctx, args)


def command(name: str | None = None, *, group: typer.Typer | None = None,
            **kwargs: Any) -> Callable[[F], F]:
    """Register a function as a command of ``app`` (or of a ``group`` such as
    ``deepgmm roi``) that reports library errors cleanly.

    A :class:`deepgmm.errors.DeepGMMError` raised inside the command becomes one line
    ``error: <message>`` on stderr (parameter names as the command's flags, see
    :func:`flag_message`) and exit code 2, or 3 for a
    :class:`~deepgmm.errors.FitError`, also under ``typer.testing.CliRunner``.
    """

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kw: Any) -> Any:
            from deepgmm.errors import DeepGMMError
            from deepgmm.output_paths import is_write_error, write_error_message
            from deepgmm.report.provenance import invocation

            with warnings.catch_warnings(), invocation(_current_context()):
                warnings.showwarning = _show_warning
                try:
                    return func(*args, **kw)
                except DeepGMMError as err:
                    message = flag_message(err, command_flags(func))
                    typer.echo(f"error: {message}", err=True)
                    raise typer.Exit(exit_code(err)) from None
                except OSError as err:
                    if not is_write_error(err):
                        raise
                    typer.echo(f"error: {write_error_message(err)}", err=True)
                    raise typer.Exit(EXIT_BAD_INPUT) from None

        kwargs.setdefault("cls", RecordingCommand)
        (group or app).command(name, **kwargs)(wrapper)
        return func

    return decorate


def _register_commands() -> None:
    """Import the command modules so they register on ``app`` (each owns one group)."""
    import importlib
    import pkgutil

    import deepgmm.commands as commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        importlib.import_module(f"deepgmm.commands.{info.name}")


_register_commands()


def main() -> None:
    """Console-script entry point: run the app, turning library errors into exit codes 2/3."""
    from deepgmm.errors import DeepGMMError

    try:
        app()
    except DeepGMMError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(exit_code(err))


if __name__ == "__main__":
    main()
