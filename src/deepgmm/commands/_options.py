"""Option parsing shared by the commands (not a command module itself)."""

from __future__ import annotations

import typer

from deepgmm.errors import InputError

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
