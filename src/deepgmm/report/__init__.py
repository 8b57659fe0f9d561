"""Reports: the output folder (NIfTI maps, tables, figures) of a segmentation run."""

from deepgmm.report.outputs import write_segmentation
from deepgmm.report.tables import format_dice_table, summarize

__all__ = ["format_dice_table", "summarize", "write_segmentation"]
