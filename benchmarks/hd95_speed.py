"""Speed of HD95 on full MR slices: MONAI on the whole slices vs ours (cut to the foreground).

``hd95_per_class`` cuts the stack to the bounding box of all foreground and makes it
contiguous before MONAI's ``compute_hausdorff_distance`` (the distances are unchanged; the
tests check them against a scipy reference). This compares it with calling MONAI on the
full slices directly, with the slices given as ``deepgmm evaluate`` reads them (``(B, X, Y)``
views of an ``(X, Y, Z)`` volume) and as a contiguous copy.

    .venv/bin/python benchmarks/hd95_speed.py [--slices 8] [--size 480] [--repeats 3]

Synthetic ring phantoms (blood disk, myocardial ring, edema and scar sectors, random
shifts), no data needed. Prints: implementation, seconds per slice (median), ratio, and the
largest difference between the two results.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np

from deepgmm.allocator import tune_cpu_allocator
from deepgmm.evaluate.metrics import hd95_per_class, one_hot


def ring_maps(n: int, size: int, seed: int) -> np.ndarray:
    """``(n, size, size)`` label maps 0..4 of a left-ventricle-like ring, ~40 px across."""
    rng = np.random.default_rng(seed)
    x, y = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    c = size / 2 + rng.uniform(-8, 8, (n, 2))
    r = np.hypot(x - c[:, 0, None, None], y - c[:, 1, None, None])
    ang = np.degrees(np.arctan2(y - c[:, 1, None, None], x - c[:, 0, None, None])) % 360
    r_in = rng.uniform(10, 14, (n, 1, 1))
    lab = np.where(r <= r_in, 1, 0)
    ring = (r > r_in) & (r <= r_in + 8)
    lab = np.where(ring, 2, lab)
    lab = np.where(ring & (ang < rng.uniform(60, 120, (n, 1, 1))), 4, lab)
    return np.where(ring & (ang > 200) & (ang < 260), 3, lab)


def monai_full(pred: np.ndarray, truth: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """MONAI on the full slices (no cut), same conventions otherwise."""
    from monai.metrics import compute_hausdorff_distance

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hd = compute_hausdorff_distance(one_hot(pred).astype(np.float32),
                                        one_hot(truth).astype(np.float32),
                                        include_background=True, percentile=95,
                                        spacing=[list(s) for s in spacing])
    return hd.numpy().astype(np.float64)


def main() -> None:
    tune_cpu_allocator()  # as the command line does (DEEPGMM_MALLOC_TUNING=0: off)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=8)
    parser.add_argument("--size", type=int, default=480)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    # label maps as read from NIfTI volumes (X, Y, Z): (B, X, Y) strided views
    truth = np.moveaxis(np.ascontiguousarray(np.moveaxis(ring_maps(args.slices, args.size, 0),
                                                         0, -1)), -1, 0)
    pred = np.moveaxis(np.ascontiguousarray(np.moveaxis(ring_maps(args.slices, args.size, 1),
                                                        0, -1)), -1, 0)
    spacing = np.full((args.slices, 2), 0.73)
    monai_full(pred[:1], truth[:1], spacing[:1])  # warm-up (imports)
    rows = []
    results = {}
    for name, fn in (("ours (cut to foreground)", hd95_per_class),
                     ("MONAI, full strided views", monai_full),
                     ("MONAI, full contiguous", lambda p, t, s: monai_full(
                         np.ascontiguousarray(p), np.ascontiguousarray(t), s))):
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            results[name] = fn(pred, truth, spacing)
            times.append((time.perf_counter() - t) / args.slices)
        rows.append((name, statistics.median(times)))
    base = rows[0][1]
    print(f"HD95, {args.slices} slices of {args.size} x {args.size}, 4 classes, "
          f"median of {args.repeats}")
    print(f"{'implementation':<28}{'s / slice':>12}{'ratio':>8}")
    for name, sec in rows:
        print(f"{name:<28}{sec:>12.4f}{sec / base:>8.2f}")
    ours = results[rows[0][0]]
    diff = max(float(np.nanmax(np.abs(ours - r))) for r in results.values())
    print(f"largest difference to ours: {diff:.3g} mm")


if __name__ == "__main__":
    main()
