"""A generic cohort layout, as nnU-Net lays out a data set.

A folder with ``dataset.json`` naming the channels (sequence names, in channel order) and
the label codes of the ground truth::

    dataset.json
    imagesTs/<case>_0000.nii.gz, <case>_0001.nii.gz, ...   one file per channel
    labelsTs/<case>.nii.gz                                  optional ground truth
    rois/<case>.nii.gz                                      optional region to segment

``dataset.json`` (nnU-Net v2's keys)::

    {"channel_names": {"0": "C0", "1": "DE", "2": "T2"},
     "labels": {"background": 0, "blood": 1, "myocardium": 2, "edema": 3, "scar": 4},
     "file_ending": ".nii.gz"}

Label names ``blood``, ``myocardium``, ``edema`` and ``scar`` are the classes; any other
name (``background``, ``right ventricle``, ...) is background. Case ids are any names
(``<case>`` above). :func:`deepgmm.data.myops.discover_cases` reads this layout whenever
the folder holds ``dataset.json``; the MyoPS file-name pattern is not needed then.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from deepgmm.errors import InputError
from deepgmm.types import CLASS_NAMES

PathLike = str | os.PathLike[str]

DATASET_JSON = "dataset.json"
IMAGES_DIR = "imagesTs"
LABELS_DIR = "labelsTs"
ROIS_DIR = "rois"
CHANNEL_FILE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})(?P<ending>\.nii(?:\.gz)?)$")


@dataclass(frozen=True)
class NnunetDataset:
    """What ``dataset.json`` says.

    Attributes:
        channels: sequence names in channel order (channel ``i`` is file ``_000i``).
        codes: label code in the files -> class index 0..4 (0 background).
        file_ending: ``.nii.gz`` or ``.nii``.
    """

    channels: tuple[str, ...]
    codes: dict[int, int]
    file_ending: str = ".nii.gz"


def is_nnunet_root(root: PathLike) -> bool:
    """Whether ``root`` is a folder with ``dataset.json``."""
    return (Path(root) / DATASET_JSON).is_file()


def read_dataset_json(root: PathLike) -> NnunetDataset:
    """Parse and check ``root/dataset.json``.

    Raises:
        InputError: unreadable JSON, missing or malformed ``channel_names`` / ``labels``
            (the message names the file and what was expected).
    """
    path = Path(root) / DATASET_JSON
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InputError(f"{str(path)!r} is not readable JSON: {err}") from None
    channels = spec.get("channel_names") if isinstance(spec, dict) else None
    if not isinstance(channels, dict) or not channels:
        raise InputError(f"{str(path)!r}: expected \"channel_names\": {{\"0\": \"C0\", ...}} "
                         "naming every channel")
    try:
        order = sorted((int(k), str(v)) for k, v in channels.items())
    except ValueError:
        raise InputError(f"{str(path)!r}: channel_names keys must be channel numbers "
                         f"\"0\", \"1\", ...; got {sorted(channels)}") from None
    if [i for i, _ in order] != list(range(len(order))):
        raise InputError(f"{str(path)!r}: channel_names must number the channels 0..M-1, "
                         f"got {[i for i, _ in order]}")
    names = tuple(n for _, n in order)
    if len(set(names)) != len(names):
        raise InputError(f"{str(path)!r}: channel names must be distinct, got {names}")
    labels = spec.get("labels")
    if not isinstance(labels, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in labels.values()):
        raise InputError(f"{str(path)!r}: expected \"labels\": {{name: integer code}} (e.g. "
                         "\"background\": 0, \"blood\": 1, \"myocardium\": 2, \"edema\": 3, "
                         "\"scar\": 4); region lists are not supported")
    classes = {name: k for k, name in enumerate(CLASS_NAMES, start=1)}
    codes = {int(code): classes.get(str(name).lower(), 0) for name, code in labels.items()}
    ending = str(spec.get("file_ending", ".nii.gz"))
    if ending not in (".nii.gz", ".nii"):
        raise InputError(f"{str(path)!r}: file_ending must be .nii.gz or .nii, got {ending!r}")
    return NnunetDataset(channels=names, codes=codes, file_ending=ending)


def discover_nnunet_cases(root: PathLike, sequences: Sequence[str] | None = None) -> list:
    """The cases of an nnU-Net-style folder, as :class:`deepgmm.data.myops.CaseFiles`.

    Args:
        root: the folder with ``dataset.json``.
        sequences: the channels to use, by name, in the order wanted (default: all, in
            ``dataset.json`` order).

    Raises:
        InputError: a bad ``dataset.json``; an asked sequence it does not name; no images;
            a case missing a channel file (named); some cases with ground truth and
            others without.
    """
    from deepgmm.data.myops import CaseFiles, _case_sort_key

    root = Path(root)
    spec = read_dataset_json(root)
    wanted = tuple(sequences) if sequences else spec.channels
    unknown = [s for s in wanted if s not in spec.channels]
    if unknown:
        raise InputError(f"{str(root / DATASET_JSON)!r} names the channels "
                         f"{', '.join(spec.channels)}; asked for {', '.join(unknown)}")
    images = root / IMAGES_DIR
    found: dict[str, dict[int, Path]] = {}
    for path in sorted(images.glob(f"*{spec.file_ending}")) if images.is_dir() else []:
        match = CHANNEL_FILE.match(path.name)
        if match and match["ending"] == spec.file_ending and not path.name.startswith("."):
            found.setdefault(match["case"], {})[int(match["channel"])] = path
    if not found:
        raise InputError(f"no images below {str(images)!r}: expected files named "
                         f"<case>_0000{spec.file_ending} (one per channel of dataset.json)")
    cases = []
    for case in sorted(found, key=_case_sort_key):
        files: dict[str, Path] = {}
        for name in wanted:
            channel = spec.channels.index(name)
            if channel not in found[case]:
                raise InputError(f"case {case}: missing channel {channel} ({name}): expected "
                                 f"the file {str(images / f'{case}_{channel:04d}')}"
                                 f"{spec.file_ending}")
            files[name] = found[case][channel]
        label = root / LABELS_DIR / f"{case}{spec.file_ending}"
        roi = root / ROIS_DIR / f"{case}{spec.file_ending}"
        cases.append(CaseFiles(case_id=case, prefix="", images=files,
                               labels=label if label.is_file() else None,
                               codes=dict(spec.codes), roi=roi if roi.is_file() else None))
    with_gd = [c for c in cases if c.labels is not None]
    if with_gd and len(with_gd) < len(cases):
        missing = next(c for c in cases if c.labels is None)
        raise InputError(f"case {missing.case_id}: missing ground-truth file: expected "
                         f"{str(root / LABELS_DIR / (missing.case_id + spec.file_ending))!r} "
                         "(other cases have one)")
    return cases


def write_dataset_json(root: PathLike, channels: Sequence[str],
                       labels: Mapping[str, int], *, n_cases: int) -> Path:
    """Write ``root/dataset.json`` for ``channels`` and label codes ``labels``."""
    from deepgmm._atomic import atomic_path

    path = Path(root) / DATASET_JSON
    spec = {"channel_names": {str(i): n for i, n in enumerate(channels)},
            "labels": dict(labels), "numTest": int(n_cases), "file_ending": ".nii.gz"}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")
    return path
