"""Label tables beside the label maps, so viewers and pipelines show names and colours.

Three formats of one table (value, name, abbreviation, colour):

- BIDS derivatives' segmentation lookup table (``<stem>.tsv``, and ``dseg.tsv`` at the top
  of the folder for the own maps): tab-separated columns ``index``, ``name``,
  ``abbreviation``, ``color`` (``#rrggbb``).
- ITK-SNAP label description file (``<stem>.itksnap.txt``; Segmentation > Import Label
  Descriptions): ``#`` comment lines, then one line per label
  ``IDX R G B A VIS MSH "LABEL"`` with IDX the voxel value (0..65535), R G B in 0..255,
  A the opacity in 0..1, VIS / MSH 0 or 1, the description in double quotes.
- 3D Slicer colour table (``<stem>.ctbl``; a discrete lookup table): header
  ``# Color table file <name>`` and ``# <n> values``, then ``index name R G B A`` with
  spaces in names replaced by underscores and R G B A in 0..255.

Label values are those of the map: MyoPS codes (0, 500, 200, 1220, 2221) for
class-ordered maps, cluster numbers 1..K for the own maps of runs without class identity.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from deepgmm.report.figures import CLASS_COLOURS
from deepgmm.report.naming import stem
from deepgmm.types import CLASS_NAMES, CLASS_TO_MYOPS

CLASS_ABBREVIATIONS: tuple[str, ...] = ("BG", "BP", "MYO", "ED", "SC")
"""Abbreviation of class index 0..4: background, blood pool, myocardium, edema, scar."""

CLUSTER_COLOURS: tuple[str, ...] = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a")
"""Colours of clusters 1..4 when they carry no class identity (distinct from the class
colours, so a cluster map is not mistaken for a class map)."""

TSV_COLUMNS: tuple[str, ...] = ("index", "name", "abbreviation", "color")


@dataclass(frozen=True)
class Label:
    """One entry of a label table: the voxel value and how to show it."""

    index: int
    name: str
    abbreviation: str
    colour: str  # "#rrggbb"

    @property
    def rgb(self) -> tuple[int, int, int]:
        """The colour as three integers 0..255."""
        h = self.colour.lstrip("#")
        return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


def class_labels() -> tuple[Label, ...]:
    """The table of maps holding MyoPS codes (background first)."""
    names = ("background", *CLASS_NAMES)
    return tuple(Label(int(code), name, abbr, colour) for code, name, abbr, colour in zip(
        CLASS_TO_MYOPS, names, CLASS_ABBREVIATIONS, CLASS_COLOURS, strict=True))


def cluster_labels() -> tuple[Label, ...]:
    """The table of own maps without class identity: background and clusters 1..K."""
    clusters = tuple(Label(k, f"cluster {k}", f"C{k}", colour)
                     for k, colour in enumerate(CLUSTER_COLOURS, start=1))
    return (Label(0, "background", "BG", CLASS_COLOURS[0]), *clusters)


def map_labels(class_identity: bool) -> tuple[Label, ...]:
    """The table of a label map: classes with class identity, clusters without."""
    return class_labels() if class_identity else cluster_labels()


def bids_tsv(labels: Sequence[Label]) -> str:
    """The BIDS segmentation lookup table (``dseg.tsv``) text."""
    lines = ["\t".join(TSV_COLUMNS)]
    lines += [f"{lb.index}\t{lb.name}\t{lb.abbreviation}\t{lb.colour}" for lb in labels]
    return "\n".join(lines) + "\n"


def itksnap_text(labels: Sequence[Label]) -> str:
    """The ITK-SNAP label description file text; background is transparent and hidden."""
    header = [
        "################################################",
        "# ITK-SnAP Label Description File",
        "# File format:",
        "# IDX   -R-  -G-  -B-  -A--  VIS MSH  LABEL",
        "# Fields:",
        "#    IDX:   Label value in the image",
        "#    -R-:   Red color component (0..255)",
        "#    -G-:   Green color component (0..255)",
        "#    -B-:   Blue color component (0..255)",
        "#    -A-:   Label opacity (0.00 .. 1.00)",
        "#    VIS:   Label visibility (0 or 1)",
        "#    MSH:   Label mesh visibility (0 or 1)",
        "#  LABEL:   Label description",
        "################################################",
    ]
    rows = []
    for lb in labels:
        r, g, b = lb.rgb
        shown = int(lb.index != 0)
        rows.append(f"{lb.index:5d} {r:5d} {g:4d} {b:4d} {float(shown):8.2f} {shown:2d} "
                    f"{shown:2d}    \"{lb.name} ({lb.abbreviation})\"")
    return "\n".join(header + rows) + "\n"


def slicer_ctbl(labels: Sequence[Label], name: str) -> str:
    """The 3D Slicer colour table text (discrete lookup table); background transparent."""
    lines = [f"# Color table file {name}", f"# {len(labels)} values"]
    for lb in labels:
        r, g, b = lb.rgb
        alpha = 0 if lb.index == 0 else 255
        lines.append(f"{lb.index} {lb.name.replace(' ', '_')} {r} {g} {b} {alpha}")
    return "\n".join(lines) + "\n"


def label_sidecar_names(map_name: str) -> list[str]:
    """The sidecars :func:`write_label_sidecars` writes beside the label map ``map_name``:
    ``<stem>.tsv``, ``<stem>.itksnap.txt``, ``<stem>.ctbl``."""
    base = stem(map_name)
    return [f"{base}.tsv", f"{base}.itksnap.txt", f"{base}.ctbl"]


def probseg_sidecar_name(map_name: str) -> str:
    """The sidecar :func:`write_probseg_sidecar` writes beside the probability map
    ``map_name``: ``<stem>.json``."""
    return f"{stem(map_name)}.json"


def write_label_sidecars(map_path: Path, labels: Sequence[Label]) -> list[Path]:
    """Write ``<stem>.tsv``, ``<stem>.itksnap.txt`` and ``<stem>.ctbl`` beside the label
    map ``map_path`` (written directly: callers write into a temporary folder).

    Returns:
        The three paths.
    """
    tsv, itksnap, ctbl = label_sidecar_names(map_path.name)
    texts = {tsv: bids_tsv(labels), itksnap: itksnap_text(labels),
             ctbl: slicer_ctbl(labels, ctbl)}
    paths = []
    for file_name, text in texts.items():
        path = map_path.with_name(file_name)
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths


def write_probseg_sidecar(map_path: Path, channels: Sequence[str]) -> Path:
    """Write ``<stem>.json`` with BIDS's ``LabelMap``: the class of each volume of a 4-D
    probability map (written directly: callers write into a temporary folder)."""
    import json

    path = map_path.with_name(probseg_sidecar_name(map_path.name))
    path.write_text(json.dumps({"LabelMap": list(channels)}, indent=2) + "\n",
                    encoding="utf-8")
    return path
