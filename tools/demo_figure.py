"""The README figure: held-out phantom slices from ``deepgmm demo``'s output folder.

One row per held-out case (its middle slice): the three sequences, the ground truth, EM-SVGMM
(clusters matched to the truth) and the trained deepSVG network (no matching), each label map
over the bSSFP image, with the method's Dice of the slice per class in the panel title.

    deepgmm demo --out demo-output
    python tools/demo_figure.py demo-output docs/figures/demo.png
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import nibabel as nib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure

from deepgmm.data.dataset import load_dataset
from deepgmm.report.figures import CLASS_COLOURS, class_legend, zoom_box
from deepgmm.types import CLASS_NAMES, MYOPS_CODES

METHODS = (("em-svgmm", "EM-SVGMM (matched)", "_seg_matched.nii.gz"),
           ("deepsvg", "deepSVG trained (no matching)", "_seg.nii.gz"))
"""Demo output folder, panel title and label-map suffix of each method shown."""


def _classes(codes: np.ndarray) -> np.ndarray:
    """MyoPS codes ``(X, Y)`` -> class indices 0..4."""
    lut = np.zeros(int(max(MYOPS_CODES)) + 1, dtype=np.int64)
    lut[list(MYOPS_CODES)] = list(MYOPS_CODES.values())
    return lut[np.asarray(codes, dtype=np.int64)]


def _slice_dice(out: Path, method: str, case: str, z: int) -> str:
    """The slice's Dice per class from ``results.csv``, as ``b/m/e/s`` text."""
    with open(out / method / "results.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["case"] == case and int(row["slice"]) == z:
                return " / ".join(f"{float(row[f'dice_{c}']):.2f}" for c in CLASS_NAMES)
    raise SystemExit(f"error: {out / method / 'results.csv'} has no row for case {case} "
                     f"slice {z}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder written by `deepgmm demo --out`")
    parser.add_argument("png", type=Path, help="PNG to write")
    args = parser.parse_args()
    summary_cases = sorted({p.name.split("_seg")[0]
                            for p in (args.out / "deepsvg").glob("*_seg.nii.gz")})
    if not summary_cases:
        raise SystemExit(f"error: {args.out / 'deepsvg'} holds no label maps; run "
                         "`deepgmm demo --out` first")
    volumes = {v.case_id: v for v in load_dataset(args.out / "phantom")}
    cmap = ListedColormap(CLASS_COLOURS)
    norm = BoundaryNorm(np.arange(len(CLASS_COLOURS) + 1) - 0.5, cmap.N)
    n_cols = 3 + 1 + len(METHODS)
    fig = Figure(figsize=(1.9 * n_cols, 2.2 * len(summary_cases) + 0.5))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(summary_cases), n_cols, squeeze=False)
    for row, case in zip(axes, summary_cases, strict=True):
        vol = volumes[case]
        z = vol.shape[2] // 2
        truth = vol.labels[:, :, z]
        maps = [("ground truth", truth, "")]
        for method, title, suffix in METHODS:
            codes = np.asarray(nib.load(str(args.out / method / f"{case}{suffix}")).dataobj)
            maps.append((title, _classes(codes[:, :, z]), _slice_dice(args.out, method, case, z)))
        rows, cols = zoom_box([truth], margin=0.25)
        images = vol.image[:, rows, cols, z]
        for ax, name, channel in zip(row, vol.sequences, images, strict=False):
            lo, hi = np.percentile(channel, [1.0, 99.0])
            ax.imshow(channel.T, cmap="gray", vmin=lo, vmax=hi, origin="lower")
            ax.set_title(f"case {case} {name}" if name == vol.sequences[0] else name,
                         fontsize=8)
        lo, hi = np.percentile(images[0], [1.0, 99.0])
        for ax, (title, labels, dice) in zip(row[len(images):], maps, strict=True):
            ax.imshow(images[0].T, cmap="gray", vmin=lo, vmax=hi, origin="lower")
            ax.imshow(np.ma.masked_equal(labels[rows, cols], 0).T, cmap=cmap, norm=norm,
                      origin="lower", interpolation="nearest", alpha=0.65)
            ax.set_title(title + (f"\nDice {dice}" if dice else ""), fontsize=7)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    class_legend(fig)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.9, bottom=0.08, wspace=0.04, hspace=0.3)
    args.png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.png, dpi=110, format="png")
    print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
