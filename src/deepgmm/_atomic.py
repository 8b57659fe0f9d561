"""Atomic output: write to a temporary name beside the target, then rename."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto ``target`` on success.

    The temporary file keeps the target's suffixes (``.nii.gz`` stays ``.nii.gz``) so that
    writers that infer the format from the name still work. On error it is removed and the
    target is left untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(target.suffixes)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".tmp{suffix}",
                                    dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike[str], *,
               keep: tuple[str, ...] = ()) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; it replaces ``target`` on success.

    Used for outputs made of many files: nothing half-written is ever visible under the
    final name. An existing ``target`` is replaced only once the new one is complete.
    ``keep``: entries of the existing ``target`` (e.g. ``"cases"``) carried over into the
    new one unchanged (moved, not copied; moved back if the swap fails).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            moved = [name for name in keep if (target / name).exists()
                     and not (tmp / name).exists()]
            for name in moved:
                os.replace(target / name, tmp / name)
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            try:
                os.replace(target, old)
                os.replace(tmp, target)
            except BaseException:
                if not target.exists() and old.exists():
                    os.replace(old, target)
                for name in moved:
                    os.replace(tmp / name, target / name)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
