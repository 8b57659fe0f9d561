"""The ``deepgmm`` command line: one typer app.

Heavy imports (torch, nibabel) happen inside the commands so that ``--help`` is instant.
Library errors (:class:`deepgmm.errors.DeepGMMError`) become one line on stderr and exit
code 2; nothing else is caught, so a real bug still shows its traceback.
"""

from __future__ import annotations

import functools
import sys
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import typer

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


def command(name: str | None = None, **kwargs: Any) -> Callable[[F], F]:
    """Register a function as a command of ``app`` that reports library errors cleanly.

    A :class:`deepgmm.errors.DeepGMMError` raised inside the command becomes one line
    ``error: <message>`` on stderr and exit code 2, also under ``typer.testing.CliRunner``.
    """

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kw: Any) -> Any:
            from deepgmm.errors import DeepGMMError
            from deepgmm.report.provenance import invocation

            with warnings.catch_warnings(), invocation(_current_context()):
                warnings.showwarning = _show_warning
                try:
                    return func(*args, **kw)
                except DeepGMMError as err:
                    typer.echo(f"error: {err}", err=True)
                    raise typer.Exit(2) from None

        app.command(name, **kwargs)(wrapper)
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
    """Console-script entry point: run the app, turning library errors into exit code 2."""
    from deepgmm.errors import DeepGMMError

    try:
        app()
    except DeepGMMError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
