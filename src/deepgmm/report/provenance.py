"""Provenance of an output folder: ``run.json``, enough to re-run the command.

The CLI records each command's invocation (:func:`invocation`): the command line as typed,
every resolved option (defaults included) and a canonical argument list that repeats them
all (``rerun``). Writing an output folder turns it into ``run.json`` (:func:`run_record`)
with the seeds, the versions of deepgmm, torch, numpy and MONAI, the device and precision,
the SHA-256 of every input file (the images and labels of the cases written, an ROI, a
μ_data file, a trained model) and the start and end times (UTC, ISO 8601).

Outside the CLI (the Python API) there is no invocation: ``command_line`` and ``rerun``
are null and the options are those the writer was given.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import platform
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from deepgmm.hashing import sha256_file

RUN_JSON = "run.json"
PACKAGES: tuple[str, ...] = ("deepgmm", "torch", "numpy", "monai")
FORMAT_VERSION = 1


@dataclass
class Invocation:
    """One command as the CLI parsed it.

    Attributes:
        command: the command name, e.g. ``"em"``.
        argv: the command line as typed (None when not known, e.g. under a test runner).
        params: option / argument name -> resolved value.
        rerun: ``["deepgmm", command, ...]`` giving every resolved value explicitly.
        started: start time, ISO 8601 UTC.
    """

    command: str
    argv: list[str] | None
    params: dict[str, Any]
    rerun: list[str]
    started: str = field(default_factory=lambda: now())


_CURRENT: contextvars.ContextVar[Invocation | None] = contextvars.ContextVar(
    "deepgmm_invocation", default=None)


def now() -> str:
    """The current time, ISO 8601 UTC with microseconds."""
    return datetime.now(UTC).isoformat()


def _json_value(value: Any) -> Any:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _json_value(v) for k, v in value.items()}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def canonical_argv(ctx: Any) -> list[str]:
    """``["deepgmm", <command>, ...]`` with every parameter of the click context ``ctx``
    spelled out (flags by their on/off name, repeatable options once per value)."""
    args: list[str] = ["deepgmm", str(ctx.info_name)]
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if param.param_type_name == "argument":
            args += [os.fspath(v) if isinstance(v, os.PathLike) else str(v)
                     for v in (value if isinstance(value, list | tuple) else [value])]
            continue
        if param.param_type_name != "option" or value is None:
            continue
        if param.is_flag:
            if param.secondary_opts:
                args.append(param.opts[0] if value else param.secondary_opts[0])
            elif value:
                args.append(param.opts[0])
            continue
        values = value if isinstance(value, list | tuple) else [value]
        for v in values:
            args += [param.opts[0], os.fspath(v) if isinstance(v, os.PathLike) else str(v)]
    return args


@contextlib.contextmanager
def invocation(ctx: Any) -> Iterator[Invocation | None]:
    """Record the command of click context ``ctx`` while it runs (None: nothing to record)."""
    if ctx is None:
        yield None
        return
    argv = list(sys.argv) if Path(sys.argv[0]).name == "deepgmm" else None
    inv = Invocation(command=str(ctx.info_name), argv=argv,
                     params={k: _json_value(v) for k, v in ctx.params.items()},
                     rerun=canonical_argv(ctx))
    token = _CURRENT.set(inv)
    try:
        yield inv
    finally:
        _CURRENT.reset(token)


def current_invocation() -> Invocation | None:
    """The running CLI command, or None (Python API)."""
    return _CURRENT.get()


def package_versions() -> dict[str, str | None]:
    """Installed version of each of :data:`PACKAGES` (None when not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def _candidate_paths(params: Mapping[str, Any], skip: Sequence[str]) -> list[Path]:
    """Paths named by the parameters (``NAME=FILE`` values included), in order."""
    found: list[Path] = []
    for name, value in params.items():
        if name in skip:
            continue
        for v in value if isinstance(value, list | tuple) else [value]:
            if not isinstance(v, str | os.PathLike) or isinstance(v, bool):
                continue
            text = os.fspath(v)
            text = text.partition("=")[2] if "=" in text and not Path(text).exists() else text
            if text and Path(text).exists():
                found.append(Path(text))
    return found


def input_files(params: Mapping[str, Any], case_ids: Sequence[str],
                skip: Sequence[str] = ("out", "run_dir")) -> dict[str, str]:
    """Path -> SHA-256 of every input file the parameters name.

    A file counts as itself; a trained run folder as its ``model.safetensors`` and
    ``config.json``; a data folder as the image and label files of ``case_ids``.
    """
    from deepgmm.fit.checkpoint import CONFIG_FILE, MODEL_FILE

    files: list[Path] = []
    for path in _candidate_paths(params, skip):
        if path.is_file():
            files.append(path)
        elif (path / MODEL_FILE).is_file():
            files += [path / MODEL_FILE, path / CONFIG_FILE]
        elif path.is_dir():
            from deepgmm.data.myops import discover_cases
            from deepgmm.errors import DeepGMMError

            wanted = set(case_ids)
            with contextlib.suppress(DeepGMMError, OSError):
                for case in discover_cases(path):
                    if case.case_id in wanted:
                        files += list(case.images.values())
                        files += [case.labels] if case.labels is not None else []
                        files += [case.roi] if case.roi is not None else []
    return {os.fspath(p): sha256_file(p) for p in dict.fromkeys(files)}


def _device_text(params: Mapping[str, Any]) -> dict[str, Any]:
    import torch

    from deepgmm.device import resolve_device
    from deepgmm.errors import DeepGMMError

    try:  # the run resolved the same request already; this only names it
        device = resolve_device(str(params.get("device", "auto")))
    except (DeepGMMError, RuntimeError):
        device = torch.device("cpu")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    return {"device": str(device), "device_name": name or platform.machine(),
            "torch_threads": torch.get_num_threads()}


def run_record(case_ids: Sequence[str], *, options: Mapping[str, Any] | None = None,
               precision: str | None = None, seeds: Mapping[str, Any] | None = None
               ) -> dict[str, Any]:
    """The ``run.json`` dict of an output folder being written now.

    Args:
        case_ids: the cases written (their input files are hashed).
        options: resolved options to record when there is no CLI invocation, and extra
            resolved values (e.g. a trained run's settings) when there is.
        precision: the arithmetic used (``"fp32"`` / ``"bf16"``), when known.
        seeds: seed name -> value, beside the command's ``seed`` option.
    """
    inv = current_invocation()
    params = dict(inv.params) if inv is not None else {}
    extra = {k: _json_value(v) for k, v in (options or {}).items()}
    all_seeds = {"seed": params["seed"]} if "seed" in params else {}
    all_seeds.update({k: _json_value(v) for k, v in (seeds or {}).items()})
    return {
        "format_version": FORMAT_VERSION,
        "command": inv.command if inv else None,
        "command_line": inv.argv if inv else None,
        "cwd": os.getcwd(),
        "rerun": inv.rerun if inv else None,
        "options": params,
        "resolved": extra,
        "seeds": all_seeds,
        "precision": precision or params.get("precision") or extra.get("precision"),
        **_device_text(params or extra),
        "versions": {**package_versions(), "python": platform.python_version()},
        "inputs": input_files({**params, **extra}, case_ids),
        "started": inv.started if inv else None,
        "finished": now(),
    }


def write_run_folder_record(run_dir: str | os.PathLike[str], case_ids: Sequence[str], *,
                            options: Mapping[str, Any] | None = None,
                            precision: str | None = None) -> Path:
    """Write ``run.json`` (atomically) into a folder that is not written as a whole, e.g.
    a training run folder; also hashes the folder's trained model as ``outputs``."""
    from deepgmm._atomic import atomic_path
    from deepgmm.fit.checkpoint import MODEL_FILE
    from deepgmm.report.tables import write_json

    run = Path(run_dir)
    record = run_record(case_ids, options=options, precision=precision)
    model = run / MODEL_FILE
    record["outputs"] = {os.fspath(model): sha256_file(model)} if model.is_file() else {}
    target = run / RUN_JSON
    with atomic_path(target) as tmp:
        write_json(tmp, record)
    return target
