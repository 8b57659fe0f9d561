"""Evaluation: Dice and HD95 per class and slice, and label matching.

Recomputing the metrics of a saved output folder lives in
:mod:`deepgmm.evaluate.recompute` (``evaluate_outputs``), which reads the report layout.
"""

from deepgmm.evaluate.matching import apply_permutation, match_clusters
from deepgmm.evaluate.metrics import dice_per_class, hd95_per_class

__all__ = ["apply_permutation", "dice_per_class", "hd95_per_class", "match_clusters"]
