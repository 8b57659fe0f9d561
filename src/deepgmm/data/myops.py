"""The MyoPS 2020 file layout and label codes.

Files are named ``<prefix>_<number>_<sequence>.nii.gz`` (sequences ``C0`` bSSFP, ``DE`` LGE,
``T2``) and ``<prefix>_<number>_gd.nii.gz`` for the ground truth, anywhere below a root
folder (``train25/``, ``train25_myops_gd/``, ``test20/``). The case id is the number.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deepgmm.errors import InputError
from deepgmm.types import MYOPS_CODES

PathLike = str | os.PathLike[str]

MYOPS_SEQUENCES: tuple[str, ...] = ("C0", "DE", "T2")
"""The three MyoPS sequences in channel order: bSSFP, LGE, T2."""

MYOPS_DEV_TEST: tuple[str, ...] = ("109", "114", "117", "120", "122")
"""Patients held out for testing when training on many images (METHOD.md)."""

LABEL_TOKEN = "gd"

FILE_PATTERN = re.compile(
    r"^(?P<prefix>.+?)_(?P<case>\d+)_(?P<token>[A-Za-z0-9]+)\.nii(?:\.gz)?$")
"""``<prefix>_<number>_<token>.nii[.gz]``; token is a sequence name or ``gd``."""


@dataclass
class CaseFiles:
    """The files of one case.

    Attributes:
        case_id: the case number as a string, e.g. ``"101"``.
        prefix: the file-name prefix, e.g. ``"myops_training"``.
        images: sequence name -> file, in the order asked for (C0, DE, T2 by default).
        labels: the ground-truth ``_gd`` file, or ``None`` (e.g. MyoPS test cases).
        codes: label code -> class index of the ground truth; ``None``: the MyoPS codes
            (an nnU-Net-style folder's ``dataset.json`` gives its own).
        roi: a mask file of the region to segment (nnU-Net-style ``rois/<case>``), used in
            place of the ground truth's left ventricle; ``None``: none.
    """

    case_id: str
    prefix: str
    images: dict[str, Path] = field(default_factory=dict)
    labels: Path | None = None
    codes: dict[int, int] | None = None
    roi: Path | None = None


def _case_sort_key(case_id: str) -> tuple[int, str]:
    return (int(case_id), case_id) if case_id.isdigit() else (1 << 62, case_id)


def discover_cases(root: PathLike, sequences: Sequence[str] = MYOPS_SEQUENCES, *,
                   patients: Sequence[str] | None = None,
                   on_problem: Callable[[str, str], None] | None = None) -> list[CaseFiles]:
    """Find every MyoPS-style case below ``root``, or the cases of an nnU-Net-style
    folder (one with ``dataset.json``, :mod:`deepgmm.data.nnunet`; the MyoPS default
    ``sequences`` then mean the channels ``dataset.json`` names).

    Only the cases that will be used need to be complete: with ``patients``, a case not
    among them that lacks a sequence (or its ground truth) is left out silently; with
    ``on_problem``, an incomplete case is reported as ``on_problem(case_id, message)`` and
    left out instead of raising.

    Args:
        root: a folder searched recursively (hidden files are ignored).
        sequences: the sequence names every case must have, in channel order.
        patients: the case ids that will be used (default: all).
        on_problem: receives the incomplete cases instead of an error.

    Returns:
        The cases sorted by case id (numerically).

    Raises:
        InputError: ``root`` is not a folder or holds no such files; a case lacks one of the
            sequences (the message names the file expected); one file exists twice; some
            cases of a prefix have ground truth and others not (names the missing file).
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"data folder {str(root)!r} does not exist or is not a folder")
    from deepgmm.data.nnunet import discover_nnunet_cases, is_nnunet_root

    if is_nnunet_root(root):
        asked = None if tuple(sequences) == MYOPS_SEQUENCES else tuple(sequences)
        return discover_nnunet_cases(root, asked)
    sequences = tuple(sequences)
    if not sequences or len(set(sequences)) != len(sequences):
        raise InputError(f"sequences must be distinct names, got {sequences!r}")
    wanted = set(sequences) | {LABEL_TOKEN}
    found: dict[str, dict[str, Path]] = {}
    prefixes: dict[str, str] = {}
    for path in sorted(root.rglob("*.nii*")):
        if any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        match = FILE_PATTERN.match(path.name)
        if match is None or match["token"] not in wanted or not path.is_file():
            continue
        case, token, prefix = match["case"], match["token"], match["prefix"]
        if prefixes.setdefault(case, prefix) != prefix:
            raise InputError(f"case id {case} is used by two prefixes, {prefixes[case]!r} and "
                             f"{prefix!r}, under {str(root)!r}; keep one data set per folder")
        files = found.setdefault(case, {})
        if token in files:
            raise InputError(f"case {case} has two {token} files: {str(files[token])!r} and "
                             f"{str(path)!r}")
        files[token] = path
    cases: list[CaseFiles] = []
    for case in sorted(found, key=_case_sort_key):
        files = found[case]
        present = [s for s in sequences if s in files]
        if not present:
            continue  # a ground-truth file without images: not a case
        prefix = prefixes[case]
        folder = files[present[0]].parent
        missing = [seq for seq in sequences if seq not in files]
        if missing:
            seq = missing[0]
            message = (f"case {case}: missing sequence {seq}: expected the file "
                       f"{str(folder / f'{prefix}_{case}_{seq}.nii.gz')!r}")
            if patients is not None and case not in patients:
                continue
            if on_problem is not None:
                on_problem(case, message)
                continue
            raise InputError(message)
        cases.append(CaseFiles(case_id=case, prefix=prefix,
                               images={s: files[s] for s in sequences},
                               labels=files.get(LABEL_TOKEN)))
    if not cases:
        raise InputError(f"no MyoPS-style images below {str(root)!r}: expected files named "
                         f"<prefix>_<number>_{{{','.join(sequences)}}}.nii.gz")
    _check_labels_complete([c for c in cases if patients is None or c.case_id in patients])
    return cases


def _check_labels_complete(cases: list[CaseFiles]) -> None:
    """Within one prefix, either every case has ground truth or none has."""
    for prefix in sorted({c.prefix for c in cases}):
        group = [c for c in cases if c.prefix == prefix]
        with_gd = [c for c in group if c.labels is not None]
        if with_gd and len(with_gd) < len(group):
            missing = next(c for c in group if c.labels is None)
            folder = with_gd[0].labels.parent  # type: ignore[union-attr]
            raise InputError(
                f"case {missing.case_id}: missing ground-truth file: expected "
                f"{str(folder / f'{prefix}_{missing.case_id}_{LABEL_TOKEN}.nii.gz')!r} "
                f"(other {prefix} cases have one)")


_CODES = np.array(sorted(MYOPS_CODES), dtype=np.int64)
_CLASSES = np.array([MYOPS_CODES[int(c)] for c in _CODES], dtype=np.int64)


def labels_to_classes(codes: np.ndarray, *, source: str = "labels",
                      table: dict[int, int] | None = None) -> np.ndarray:
    """Map MyoPS ground-truth codes to class indices.

    0 -> 0 background, 500 -> 1 blood, 200 -> 2 myocardium, 1220 -> 3 edema, 2221 -> 4 scar,
    600 (right ventricle) -> 0 background.

    Args:
        codes: any-shape array of codes (integer-valued; float arrays as read by
            :func:`deepgmm.data.nifti.load_nifti` are accepted).
        source: what the codes came from (a file name), for messages.
        table: code -> class index instead of the MyoPS codes (an nnU-Net-style
            ``dataset.json``'s labels).

    Returns:
        An int64 array of class indices 0..4, same shape.

    Raises:
        InputError: listing the codes that are not MyoPS codes.
    """
    known_codes, classes, what = _CODES, _CLASSES, "MyoPS codes"
    if table is not None:
        known_codes = np.array(sorted(table), dtype=np.int64)
        classes = np.array([table[int(c)] for c in known_codes], dtype=np.int64)
        what = "codes of dataset.json"
    codes = np.asarray(codes)
    values = np.unique(codes)
    rounded = np.rint(values)
    known = np.isin(rounded, known_codes) & (rounded == values)
    if not known.all():
        bad = ", ".join(f"{v:g}" for v in values[~known][:10])
        raise InputError(f"{source} holds label code(s) {bad} that are not {what} "
                         f"(expected {', '.join(str(c) for c in known_codes)})")
    index = np.searchsorted(known_codes, np.rint(codes).astype(np.int64))
    return classes[index]


def sequence_names(root: PathLike) -> tuple[str, ...]:
    """The sequence names (file tokens other than ``gd``) of the MyoPS-style files below
    ``root``, MyoPS ones first in their order, then the others sorted; hidden files ignored.
    """
    root = Path(root)
    from deepgmm.data.nnunet import is_nnunet_root, read_dataset_json

    if is_nnunet_root(root):
        return read_dataset_json(root).channels
    tokens: set[str] = set()
    for path in root.rglob("*.nii*"):
        if any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        match = FILE_PATTERN.match(path.name)
        if match is not None and match["token"] != LABEL_TOKEN:
            tokens.add(match["token"])
    known = [s for s in MYOPS_SEQUENCES if s in tokens]
    return (*known, *sorted(tokens - set(known)))
