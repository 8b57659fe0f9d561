"""PNG figures of segmented slices: the sequences, the prediction and the truth side by side.

Uses matplotlib's object API with the Agg canvas (no pyplot state, no display needed).
Class colours are fixed (:data:`CLASS_COLOURS`) so every figure reads the same way.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from deepgmm.types import CLASS_NAMES

CLASS_COLOURS: tuple[str, ...] = ("#000000", "#e41a1c", "#4daf4a", "#ffd92f", "#377eb8")
"""Colour of class index 0..4: background black, blood red, myocardium green, edema
yellow, scar blue."""


def class_legend(fig: Any) -> None:
    """One row of class colour patches (blood .. scar) along the bottom of ``fig``."""
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=c, edgecolor="none", label=n)
               for c, n in zip(CLASS_COLOURS[1:], CLASS_NAMES, strict=True)]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8,
               frameon=False)


def zoom_box(masks: Sequence[np.ndarray], margin: float = 0.35,
             min_size: int = 24) -> tuple[slice, slice]:
    """Square-ish window around the union of the non-zero pixels of ``masks``.

    Args:
        masks: ``(H, W)`` label maps; their foreground decides the window.
        margin: extra space on each side, as a fraction of the foreground's extent.
        min_size: smallest side of the window in pixels.

    Returns:
        ``(rows, cols)`` slices into ``(H, W)``; the whole map when nothing is foreground.
    """
    union = np.zeros(np.shape(masks[0]), dtype=bool)
    for mask in masks:
        union |= np.asarray(mask) > 0
    h, w = union.shape
    if not union.any():
        return slice(0, h), slice(0, w)
    windows = []
    for axis, full in ((1, h), (0, w)):
        idx = np.flatnonzero(union.any(axis=axis))
        lo, hi = int(idx[0]), int(idx[-1]) + 1
        pad = max(int(round(margin * (hi - lo))), (min_size - (hi - lo) + 1) // 2, 0)
        windows.append(slice(max(lo - pad, 0), min(hi + pad, full)))
    return windows[0], windows[1]


def slice_figure(path: str | os.PathLike[str], image: np.ndarray, sequences: Sequence[str],
                 pred: np.ndarray, truth: np.ndarray | None = None, *, title: str = "",
                 dpi: int = 100, uncertainty: np.ndarray | None = None) -> Path:
    """Save one slice as a row of panels: each sequence, the prediction, the truth and,
    when given, the uncertainty map.

    All panels show the same window around the labelled region; the label maps are drawn
    semi-transparently over the first sequence.

    Args:
        path: the ``.png`` to write (written directly; callers write into a temporary
            folder or wrap it in :func:`deepgmm._atomic.atomic_path`).
        image: ``(M, H, W)`` the cropped, normalised sequences.
        sequences: the M sequence names, panel titles.
        pred: ``(H, W)`` int predicted class indices 0..4.
        truth: ``(H, W)`` int true class indices 0..4, or None (panel left out).
        title: figure title.
        dpi: resolution.
        uncertainty: ``(H, W)`` entropy of the class probabilities in nats (0 certain,
            ``log K`` uniform; :func:`entropy_map`), or None (panel left out).

    Returns:
        The written path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import BoundaryNorm, ListedColormap
    from matplotlib.figure import Figure

    image = np.asarray(image, dtype=np.float32)
    maps = [("prediction", np.asarray(pred))]
    if truth is not None:
        maps.append(("ground truth", np.asarray(truth)))
    # Zoom on the segmented region: the ROI is small in the crop, and the labels are the
    # point of the figure. Label panels are drawn over the first sequence.
    rows, cols = zoom_box([m for _, m in maps])
    image = image[:, rows, cols]
    maps = [(name, m[rows, cols]) for name, m in maps]
    n_panels = image.shape[0] + len(maps) + (uncertainty is not None)
    fig = Figure(figsize=(2.4 * n_panels, 2.9))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, n_panels, squeeze=False)[0]
    cmap = ListedColormap(CLASS_COLOURS)
    norm = BoundaryNorm(np.arange(len(CLASS_COLOURS) + 1) - 0.5, cmap.N)
    for ax, name, channel in zip(axes, sequences, image, strict=False):
        lo, hi = np.percentile(channel, [1.0, 99.0])
        ax.imshow(channel.T, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1.0,
                  origin="lower", interpolation="nearest")
        ax.set_title(str(name), fontsize=9)
    lo, hi = np.percentile(image[0], [1.0, 99.0])
    for ax, (name, labels) in zip(axes[image.shape[0]:image.shape[0] + len(maps)], maps,
                                  strict=True):
        ax.imshow(image[0].T, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1.0,
                  origin="lower", interpolation="nearest")
        overlay = np.ma.masked_equal(labels, 0)
        ax.imshow(overlay.T, cmap=cmap, norm=norm, origin="lower", interpolation="nearest",
                  alpha=0.6)
        ax.set_title(f"{name} (over {sequences[0]})", fontsize=9)
    if uncertainty is not None:
        ax = axes[-1]
        shown = ax.imshow(np.asarray(uncertainty, dtype=np.float32)[rows, cols].T,
                          cmap="magma", vmin=0.0, vmax=float(np.log(len(CLASS_NAMES))),
                          origin="lower", interpolation="nearest")
        ax.set_title("uncertainty (entropy)", fontsize=9)
        fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.02).ax.tick_params(labelsize=7)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    class_legend(fig)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(left=0.01, right=0.99 if uncertainty is None else 0.96, top=0.82,
                        bottom=0.1, wspace=0.05)
    path = Path(path)
    fig.savefig(path, dpi=dpi, format="png")
    return path


def entropy_map(probs: np.ndarray) -> np.ndarray:
    """Entropy of the class probabilities, ``-sum_k p_k log p_k`` in nats.

    Args:
        probs: ``(..., K, H, W)`` probabilities (0 outside the ROI gives entropy 0).

    Returns:
        ``(..., H, W)`` float32, between 0 (one class certain) and ``log K`` (uniform).
    """
    from scipy.special import entr

    return entr(np.asarray(probs, dtype=np.float64)).sum(axis=-3).astype(np.float32)
