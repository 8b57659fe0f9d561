"""Atomic output: write to a temporary name beside the target, then rename.

Files and folders get the permissions the user's umask gives (``0o666`` / ``0o777``
masked), as with any other tool, not the private ``0o600`` / ``0o700`` of temporary
files. An OS error while writing (read-only folder, full disk) becomes an
:class:`~deepgmm.errors.OutputError` naming the target; the temporary file or folder is
removed, so nothing half-written is left.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

from deepgmm.output_paths import user_umask, write_manifest, writing


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto ``target`` on success.

    The temporary file keeps the target's suffixes (``.nii.gz`` stays ``.nii.gz``) so that
    writers that infer the format from the name still work. On error it is removed and the
    target is left untouched.

    Raises:
        OutputError: the file could not be written (naming ``target`` and why).
    """
    target = Path(target)
    tmp: Path | None = None
    try:
        with writing(target):
            target.parent.mkdir(parents=True, exist_ok=True)
            suffix = "".join(target.suffixes)
            fd, tmp_name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".tmp{suffix}",
                                            dir=target.parent)
            os.close(fd)
            tmp = Path(tmp_name)
            os.chmod(tmp, 0o666 & ~user_umask())
            yield tmp
            os.replace(tmp, target)
    except BaseException:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike[str], *,
               keep: tuple[str, ...] = (), announce: bool = True) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; it replaces ``target`` on success.

    Used for outputs made of many files: nothing half-written is ever visible under the
    final name. An existing ``target`` is replaced only once the new one is complete
    (callers check first that it holds only deepgmm's files:
    :func:`deepgmm.output_paths.check_output_folder`). The new folder's manifest
    (:data:`deepgmm.output_paths.MANIFEST`) lists every file written into it.
    ``keep``: entries of the existing ``target`` (e.g. ``"cases"``) carried over into the
    new one unchanged (moved, not copied; moved back if the swap fails).

    Replacing an earlier output is announced with a warning (``replaced the earlier output
    in ...``) when ``announce`` is true and the existing ``target`` held anything besides
    the ``keep`` entries: an empty folder, or one holding only a per-case run's
    ``cases/`` (the run's own work in progress), was no earlier output.

    Raises:
        OutputError: the folder could not be written (naming ``target`` and why).
    """
    target = Path(target)
    tmp: Path | None = None
    try:
        with writing(target):
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp",
                                        dir=target.parent))
            os.chmod(tmp, 0o777 & ~user_umask())
            yield tmp
            if target.exists():
                earlier = any(entry.name not in keep for entry in target.iterdir())
                moved = [name for name in keep if (target / name).exists()
                         and not (tmp / name).exists()]
                for name in moved:
                    os.replace(target / name, tmp / name)
                write_manifest(tmp)
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
                if announce and earlier:
                    warnings.warn(f"replaced the earlier output in {str(target)!r}",
                                  stacklevel=3)
            else:
                write_manifest(tmp)
                os.replace(tmp, target)
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
