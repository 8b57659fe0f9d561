"""Quality of the LV region of interest found by the ROI network, cross-validated by patient.

The 25 MyoPS 2020 training patients are split into the 5 folds of
``benchmarks/cv_quality.py`` (fold 1 is the paper's dev split 109 114 117 120 122). For each
fold an ROI network (:func:`deepgmm.roi.train.train_roi`, default settings unless given) is
trained on the 20 other patients' slices and their ground-truth LV (blood pool, myocardium,
edema, scar), then predicts the LV of the fold's 5 patients (all their slices, no oracle),
post-processed as ``deepgmm roi predict`` does. Against the ground truth it prints, per
case, the 3-D Dice, the mean and lowest per-slice Dice and the crop-centre error in mm
(distance between the centres :func:`deepgmm.data.slices.crop_center` takes from the
predicted and the true ROI); then per fold and over all folds the mean +- sd of per-case
Dice, the mean per-slice Dice, the mean and largest centre error and the training time.
Targets: per-case Dice >= 0.90, centre error <= 5 mm.

    PYTHONPATH=src .venv/bin/python benchmarks/roi_quality.py [--folds 1 2 3 4 5]
        [--root /work/shared/data/myops2020] [--epochs 40] [--seed 0] [--threads 1]
        [--runs DIR] [--markdown FILE]

``--runs DIR`` keeps each fold's ROI run in ``DIR/fold<i>`` and reuses it when present.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

FOLDS: dict[int, tuple[str, ...]] = {
    # The folds of benchmarks/cv_quality.py (FOLDS there; fold 1 is the paper's dev split).
    1: ("109", "114", "117", "120", "122"),
    2: ("101", "103", "108", "111", "112"),
    3: ("102", "104", "110", "121", "124"),
    4: ("107", "113", "115", "118", "123"),
    5: ("105", "106", "116", "119", "125"),
}
_BESIDE = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "myops2020"
DEFAULT_ROOT = _BESIDE if _BESIDE.is_dir() else Path("/work/shared/data/myops2020")
TARGET_DICE = 0.90
TARGET_CENTRE_MM = 5.0


@dataclasses.dataclass
class CaseScore:
    """One test case's ROI quality."""

    fold: int
    case_id: str
    dice: float
    slice_dice: list[float]
    centre_mm: float


def run_fold(fold: int, volumes: list, settings, runs: Path | None,
             progress: bool) -> tuple[list[CaseScore], float]:
    """Train on the fold's 20 training patients (or reuse the run), score its 5 patients."""
    from deepgmm.roi.model import load_roi_run
    from deepgmm.roi.predict import predict_mask
    from deepgmm.roi.quality import case_dice, centre_error_mm, slice_dice
    from deepgmm.roi.train import train_roi

    test_ids = set(FOLDS[fold])
    train = [v for v in volumes if v.case_id not in test_ids]
    test = [v for v in volumes if v.case_id in test_ids]
    seconds = 0.0
    with tempfile.TemporaryDirectory() as scratch:
        run = (runs / f"fold{fold}") if runs else Path(scratch) / "run"
        if (run / "config.json").is_file():
            model = load_roi_run(run)
            seconds = float(model.config.get("train_seconds", math.nan))
            if sorted(model.config["train_patients"]) != sorted(v.case_id for v in train):
                sys.exit(f"error: {run} was trained on other patients than fold {fold}'s")
        else:
            start = time.perf_counter()
            model = train_roi(train, run, settings=settings, progress=progress)
            seconds = time.perf_counter() - start
        scores = []
        for vol in test:
            mask = predict_mask(model, vol.image, vol.zooms)
            per_slice = slice_dice(mask, vol.roi)
            scores.append(CaseScore(fold=fold, case_id=vol.case_id,
                                    dice=case_dice(mask, vol.roi),
                                    slice_dice=[float(d) for d in per_slice],
                                    centre_mm=centre_error_mm(vol, mask)))
    return scores, seconds


def _mean_sd(values: list[float]) -> str:
    arr = np.asarray(values, dtype=np.float64)
    return f"{np.nanmean(arr):.3f} ± {np.nanstd(arr):.3f}"


def format_tables(scores: list[CaseScore], seconds: dict[int, float]) -> str:
    """Per-case rows, then one row per fold and one over all folds (Markdown tables)."""
    lines = ["| fold | case | slices | 3-D Dice | mean slice Dice | lowest slice Dice "
             "| centre error (mm) |", "|---|---|---|---|---|---|---|"]
    for s in scores:
        sd = np.asarray(s.slice_dice)
        lines.append(f"| {s.fold} | {s.case_id} | {len(sd)} | {s.dice:.3f} | "
                     f"{np.nanmean(sd):.3f} | {np.nanmin(sd):.3f} | {s.centre_mm:.1f} |")
    lines += ["", "| folds | cases | slices | per-case Dice (mean ± sd) | per-slice Dice "
              "(mean ± sd) | lowest case Dice | centre error mean / max (mm) | training (s) |",
              "|---|---|---|---|---|---|---|---|"]
    groups = {str(f): [s for s in scores if s.fold == f] for f in sorted(seconds)}
    if len(groups) > 1:
        groups["all"] = scores
    for name, group in groups.items():
        slices = [d for s in group for d in s.slice_dice]
        centres = [s.centre_mm for s in group]
        train_s = (seconds[int(name)] if name != "all" else sum(seconds.values()))
        train_text = "–" if math.isnan(train_s) else f"{train_s:.0f}"
        lines.append(f"| {name} | {len(group)} | {len(slices)} | "
                     f"{_mean_sd([s.dice for s in group])} | {_mean_sd(slices)} | "
                     f"{min(s.dice for s in group):.3f} | {np.nanmean(centres):.1f} / "
                     f"{np.nanmax(centres):.1f} | {train_text} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from deepgmm.data.dataset import load_dataset
    from deepgmm.roi.model import RoiSettings

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--folds", type=int, nargs="+", default=list(FOLDS))
    parser.add_argument("--epochs", type=int, default=RoiSettings.epochs)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (1 is fastest on a busy machine)")
    parser.add_argument("--runs", type=Path, default=None)
    parser.add_argument("--markdown", type=Path, default=None)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    bad = [f for f in args.folds if f not in FOLDS]
    if bad:
        sys.exit(f"error: --folds {bad} unknown; folds are {', '.join(map(str, FOLDS))}")
    if not (args.root / "train25").is_dir():
        sys.exit(f"error: --root {str(args.root)!r} holds no MyoPS 2020 data "
                 f"(expected train25/)")
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = RoiSettings(epochs=args.epochs, seed=args.seed)
    volumes = load_dataset(args.root)
    scores: list[CaseScore] = []
    seconds: dict[int, float] = {}
    for fold in args.folds:
        fold_scores, seconds[fold] = run_fold(fold, volumes, settings, args.runs,
                                              progress=not args.no_progress)
        scores += fold_scores
        print(f"fold {fold}: per-case Dice {_mean_sd([s.dice for s in fold_scores])}, "
              f"centre error {np.mean([s.centre_mm for s in fold_scores]):.1f} mm, "
              f"training {seconds[fold]:.0f} s", flush=True)
    table = format_tables(scores, seconds)
    print(table)
    print(f"settings: {dataclasses.asdict(settings)}; targets: per-case Dice >= "
          f"{TARGET_DICE}, centre error <= {TARGET_CENTRE_MM} mm")
    if args.markdown:
        args.markdown.write_text(table + "\n")
    if any(math.isnan(s.centre_mm) for s in scores):
        print("note: NaN centre error = no LV found in that case")


if __name__ == "__main__":
    main()
