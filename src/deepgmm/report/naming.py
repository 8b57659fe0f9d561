"""File names of the maps an output folder holds: deepgmm's own scheme or BIDS-style.

``deepgmm`` (the default): ``<case>_seg.nii.gz``, ``<case>_prob.nii.gz`` and, with oracle
matching, ``<case>_seg_matched.nii.gz`` / ``<case>_prob_matched.nii.gz``.

``bids``: the BIDS-derivatives suffixes of discrete and probabilistic segmentations,
``<case>_dseg.nii.gz``, ``<case>_probseg.nii.gz``, and the matched maps told apart with
the ``desc`` entity: ``<case>_desc-matched_dseg.nii.gz``,
``<case>_desc-matched_probseg.nii.gz``.

Sidecars sit beside every map under its stem (the name without ``.nii.gz``):
``<stem>.tsv`` (BIDS label table), ``<stem>.itksnap.txt`` (ITK-SNAP label description),
``<stem>.ctbl`` (3D Slicer colour table) for label maps, ``<stem>.json`` (``LabelMap``:
the class of each volume) for probability maps.
"""

from __future__ import annotations

from dataclasses import dataclass

from deepgmm.errors import InputError

NIFTI_EXT = ".nii.gz"


@dataclass(frozen=True)
class MapNames:
    """The suffixes (after ``<case>``) of the four maps of one naming scheme."""

    scheme: str
    seg: str
    prob: str
    seg_matched: str
    prob_matched: str

    def pattern(self, suffix: str) -> str:
        """``"<case>" + suffix``: the key of a map in ``summary.json``'s ``maps``."""
        return f"<case>{suffix}"


NAMINGS: dict[str, MapNames] = {
    "deepgmm": MapNames("deepgmm", "_seg.nii.gz", "_prob.nii.gz", "_seg_matched.nii.gz",
                        "_prob_matched.nii.gz"),
    "bids": MapNames("bids", "_dseg.nii.gz", "_probseg.nii.gz",
                     "_desc-matched_dseg.nii.gz", "_desc-matched_probseg.nii.gz"),
}
"""Naming scheme name -> its map suffixes."""


def map_names(scheme: str) -> MapNames:
    """The :class:`MapNames` of ``scheme``; InputError naming ``--naming`` otherwise."""
    try:
        return NAMINGS[scheme]
    except KeyError:
        raise InputError(f"--naming must be one of {', '.join(NAMINGS)}; got {scheme!r}"
                         ) from None


def stem(file_name: str) -> str:
    """``"101_seg.nii.gz"`` -> ``"101_seg"``: the name sidecars are built on."""
    if not file_name.endswith(NIFTI_EXT):
        raise ValueError(f"{file_name!r} is not a .nii.gz name")
    return file_name[: -len(NIFTI_EXT)]
