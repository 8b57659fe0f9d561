"""Reports: the output folder (NIfTI maps, tables, figures) of a segmentation run."""

from deepgmm.report.outputs import write_segmentation
from deepgmm.report.tables import format_dice_table, format_summary, summarize

__all__ = ["format_dice_table", "format_summary", "summarize", "write_segmentation"]
