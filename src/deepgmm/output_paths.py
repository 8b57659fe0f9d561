"""Where a command may write: every ``--out`` is checked here before any work is done.

One rule for every writing command:

- an output (file or folder) is never one of the command's inputs, never contains one,
  and never lies inside a data folder it reads;
- an output file is never an existing folder, and its parent is never a file;
- a folder that is replaced as a whole (the output folder of ``em``, ``fit``, ``segment``,
  ``predict``, ``roi predict``) is replaced only when it holds nothing but what deepgmm
  wrote there. Every such folder carries a manifest, :data:`MANIFEST`, listing the files
  deepgmm wrote; a file that is not listed (a user's notes, a folder written before the
  manifest existed) makes the folder refused, with the file named. Replacing an earlier
  output is announced with a warning (``warning: replaced the earlier output in ...``).

Writing errors (a read-only folder, a full disk, a missing permission) become an
:class:`~deepgmm.errors.OutputError` naming the path and the reason (:func:`writing`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from deepgmm.errors import InputError, OutputError

PathLike = str | os.PathLike[str]

MANIFEST = ".deepgmm-manifest.json"
"""The list of the files deepgmm wrote in an output folder (relative POSIX paths)."""
MANIFEST_FORMAT = "deepgmm-manifest"

WRITE_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC,
                          errno.EDQUOT, errno.EISDIR, errno.ENOTDIR, errno.EEXIST,
                          errno.ENAMETOOLONG, errno.EFBIG, errno.EMLINK})
"""OS errors that mean "this path cannot be written", not a bug of the program."""

_SHOWN = 3  # how many offending files a message names


def _check_nearest_parent(path: str | os.PathLike[str], target: Path, what: str) -> None:
    """Refuse ``target`` when its nearest existing parent is a file, not a folder."""
    for parent in target.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"{what} {str(path)!r}: {str(parent)!r} is a file, not a "
                                 "folder")
            return


def _resolved(path: PathLike) -> Path:
    return Path(path).expanduser().resolve()


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _check_not_input(out: PathLike, inputs: Iterable[PathLike], what: str) -> Path:
    """Refuse an output that is an input, contains one, or lies inside an input folder."""
    target = _resolved(out)
    sources = [(src, _resolved(src)) for src in inputs if src is not None and str(src)]
    for src, source in sources:
        if target == source:
            raise InputError(f"{what} {str(out)!r} is the input {str(src)!r}; choose another "
                             "output")
    for src, source in sources:
        if _is_within(source, target):
            raise InputError(f"{what} {str(out)!r} contains the input {str(src)!r}; choose "
                             "another output folder")
        if source.is_dir() and _is_within(target, source):
            which = " (it is one of its files)" if target.exists() else ""
            raise InputError(f"{what} {str(out)!r} lies inside the input folder "
                             f"{str(src)!r}{which}; write outputs outside the data")
    return target


def check_output_file(path: PathLike, inputs: Iterable[PathLike] = (), *,
                      what: str = "output file") -> Path:
    """Check that ``path`` may be written as one file before any work is done.

    Args:
        path: the file to write (an existing file is replaced).
        inputs: the command's input files and folders.
        what: how messages name the output.

    Returns:
        ``path`` as a :class:`Path`.

    Raises:
        InputError: ``path`` is an input or inside an input folder, is a folder, or its
            parent is a file.
    """
    target = _check_not_input(path, inputs, what)
    if target.is_dir():
        raise InputError(f"{what} {str(path)!r} is an existing folder; give a file name, "
                         f"e.g. {str(Path(path) / 'out.json')!r}")
    _check_nearest_parent(path, target, what)
    return Path(path)


def check_output_folder(path: PathLike, inputs: Iterable[PathLike] = (), *,
                        replace: bool = True, what: str = "output folder",
                        kind: str = "deepgmm") -> Path:
    """Check that ``path`` may be written as an output folder before any work is done.

    Args:
        path: the folder.
        inputs: the command's input files and folders.
        replace: the folder is replaced as a whole: an existing non-empty folder must hold
            only files listed in its manifest (an earlier output, whose replacement
            :func:`deepgmm._atomic.atomic_dir` announces with a warning). False: files are
            added to it (a training run folder).
        what: how messages name the output.
        kind: what writes such folders, for messages (``"`deepgmm roi predict`"``).

    Returns:
        ``path`` resolved.

    Raises:
        InputError: naming the folder and the reason.
    """
    target = _check_not_input(path, inputs, what)
    if target.exists() and not target.is_dir():
        raise InputError(f"{what} {str(path)!r} exists and is a file, not a folder")
    _check_nearest_parent(path, target, what)
    if replace and target.is_dir() and any(target.iterdir()):
        if manifest_kind(target) == "run":
            raise InputError(f"{what} {str(path)!r} is a training run folder; it is never "
                             "replaced: choose another output folder")
        foreign = foreign_files(target)
        if foreign:
            listed = ", ".join(foreign[:_SHOWN]) + (", ..." if len(foreign) > _SHOWN else "")
            why = (f"is not an earlier {kind} output (it has no {MANIFEST})"
                   if read_manifest(target) is None else "holds files deepgmm did not write")
            raise InputError(f"{what} {str(path)!r} {why}: {listed}; it would be replaced "
                             "as a whole, so choose a new or empty folder, or move those "
                             "files away")
    return target


def _files_below(folder: Path) -> list[str]:
    """Relative POSIX paths of the files (and links) below ``folder``, sorted."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() or p.is_symlink())


def _read_manifest_doc(folder: PathLike) -> dict | None:
    path = Path(folder) / MANIFEST
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT or not isinstance(
            doc.get("files"), list):
        return None
    return doc


def read_manifest(folder: PathLike) -> set[str] | None:
    """The files listed in ``folder``'s manifest, or None when it has none (or a bad one)."""
    doc = _read_manifest_doc(folder)
    return None if doc is None else {str(f) for f in doc["files"]}


def manifest_kind(folder: PathLike) -> str | None:
    """What wrote ``folder``: ``"output"`` (a segmenting command, ``roi predict``),
    ``"run"`` (a training run), or None without a manifest."""
    doc = _read_manifest_doc(folder)
    return None if doc is None else str(doc.get("kind", "output"))


def foreign_files(folder: PathLike) -> list[str]:
    """Files below ``folder`` that its manifest does not list (all of them without one)."""
    folder = Path(folder)
    listed = read_manifest(folder) or set()
    return [f for f in _files_below(folder) if f != MANIFEST and f not in listed]


def write_manifest(folder: PathLike, files: Sequence[str] | None = None, *,
                   kind: str = "output") -> Path:
    """Write ``folder``'s manifest: ``files`` (default: every file below it now) and
    ``kind`` (``"output"``: replaceable by another output; ``"run"``: a training run,
    never replaced)."""
    folder = Path(folder)
    names = sorted(set(_files_below(folder) if files is None else files) - {MANIFEST})
    path = folder / MANIFEST
    doc = {"format": MANIFEST_FORMAT, "kind": kind, "files": names}
    path.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    return path


def add_to_manifest(folder: PathLike, names: Iterable[str], *, create: bool = True,
                    kind: str = "output") -> None:
    """List ``names`` (paths relative to ``folder``) in ``folder``'s manifest.

    Args:
        folder: the output folder.
        names: the files just written there.
        create: start a manifest when the folder has none; False leaves a folder without
            one as it is (a folder written before manifests existed stays unlisted).
    """
    listed = read_manifest(folder)
    if listed is None and not create:
        return
    write_manifest(folder, sorted((listed or set()) | {Path(n).as_posix() for n in names}),
                   kind=manifest_kind(folder) or kind)


def _reason(err: OSError) -> str:
    if err.errno == errno.ENOSPC:
        return "no space left on the device"
    if err.errno == errno.EROFS:
        return "the file system is read-only"
    if err.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return err.strerror or str(err)


def is_write_error(err: BaseException) -> bool:
    """Whether ``err`` is an OS error that means a path could not be written."""
    return isinstance(err, OSError) and err.errno in WRITE_ERRNOS


def write_error_message(err: OSError, target: PathLike | None = None) -> str:
    """"could not write PATH: REASON" for an OS error while writing (``target``: the path
    meant, default the error's own file name)."""
    where = target if target is not None else (err.filename or "the output")
    return f"could not write {str(where)!r}: {_reason(err)}"


@contextlib.contextmanager
def writing(target: PathLike) -> Iterator[None]:
    """Turn an OS error while writing ``target`` into an :class:`OutputError` naming it.

    Raises:
        OutputError: "could not write TARGET: REASON"; the OS error is its cause.
    """
    try:
        yield
    except OutputError:
        raise
    except OSError as err:
        if not is_write_error(err):
            raise
        raise OutputError(write_error_message(err, target)
                          + "; nothing partial was left under that name") from err


def user_umask() -> int:
    """The process's umask (read without changing it where /proc allows)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # no /proc: read it by setting it, and set it back
    os.umask(mask)
    return mask
