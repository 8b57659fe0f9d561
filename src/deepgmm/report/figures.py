"""PNG figures of segmented slices: the sequences, the prediction and the truth side by side.

Uses matplotlib's object API with the Agg canvas (no pyplot state, no display needed).
Class colours are fixed (:data:`CLASS_COLOURS`) so every figure reads the same way.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from deepgmm.types import CLASS_NAMES

CLASS_COLOURS: tuple[str, ...] = ("#000000", "#e41a1c", "#4daf4a", "#ffd92f", "#377eb8")
"""Colour of class index 0..4: background black, blood red, myocardium green, edema
yellow, scar blue."""


def slice_figure(path: str | os.PathLike[str], image: np.ndarray, sequences: Sequence[str],
                 pred: np.ndarray, truth: np.ndarray | None = None, *, title: str = "",
                 dpi: int = 80) -> Path:
    """Save one slice as a row of panels: each sequence, the prediction, the truth.

    Args:
        path: the ``.png`` to write (written directly; callers write into a temporary
            folder or wrap it in :func:`deepgmm._atomic.atomic_path`).
        image: ``(M, H, W)`` the cropped, normalised sequences.
        sequences: the M sequence names, panel titles.
        pred: ``(H, W)`` int predicted class indices 0..4.
        truth: ``(H, W)`` int true class indices 0..4, or None (panel left out).
        title: figure title.
        dpi: resolution.

    Returns:
        The written path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import BoundaryNorm, ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    image = np.asarray(image, dtype=np.float32)
    maps = [("prediction", np.asarray(pred))]
    if truth is not None:
        maps.append(("ground truth", np.asarray(truth)))
    n_panels = image.shape[0] + len(maps)
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
    for ax, (name, labels) in zip(axes[image.shape[0]:], maps, strict=True):
        ax.imshow(labels.T, cmap=cmap, norm=norm, origin="lower", interpolation="nearest")
        ax.set_title(name, fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [Patch(facecolor=c, edgecolor="none", label=n)
               for c, n in zip(CLASS_COLOURS[1:], CLASS_NAMES, strict=True)]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8,
               frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.82, bottom=0.1, wspace=0.05)
    path = Path(path)
    fig.savefig(path, dpi=dpi, format="png")
    return path
