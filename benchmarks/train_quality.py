"""Quality of deepG / deepSVG trained on many images: the paper's split, lam = 1, no matching.

Trains one network on the all-class slices of the 20 training patients of MyoPS 2020
(101-125 except 109 114 117 120 122), with mu_data from 10 random training slices
(seed 42), then segments the 19 all-class slices of the 5 held-out patients: once with the
trained network alone, once with ``--refine N`` per-slice iterations started from it and,
with ``--tta``, once with the class probabilities averaged over the crop's quarter turns
and mirrors.
The class order comes from mu_data (lam = 1), so no label matching is used.

    .venv/bin/python benchmarks/train_quality.py [--root ../shared/data/myops2020]
        [--model deepg] [--seeds 0] [--refine 50] [--refine-lam L] [--epochs 100]
        [--penalty batch|slice] [--clip-norm 12] [--label-weights 0 5]
        [--labelled-slices 10] [--tta] [--precision fp32|bf16]
        [--test-patients 109 114 117 120 122] [--exclude ...] [--device auto]

Prints one row per seed and variant (mean Dice over the 19 slices per class, mean NLL,
training time, epochs), the mean over seeds when there are several, and the published
code's scores from docs/METHOD.md for comparison.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from deepgmm.allocator import tune_cpu_allocator
from deepgmm.data.dataset import load_dataset
from deepgmm.data.myops import MYOPS_DEV_TEST
from deepgmm.data.slices import make_batch
from deepgmm.evaluate.metrics import dice_per_class
from deepgmm.fit.precision import PRECISIONS
from deepgmm.fit.predict import predict
from deepgmm.fit.train import train_network
from deepgmm.types import CLASS_NAMES

PUBLISHED = {  # docs/METHOD.md: published code, trained on 20 patients, lam = 1, H100
    "deepg": (0.87, 0.84, 0.35, 0.57, 2.86),
    "deepsvg": (0.87, 0.84, 0.36, 0.57, 1.85),
}
DEFAULT_ROOT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "myops2020"


def label_map(resp: np.ndarray, roi: np.ndarray) -> np.ndarray:
    """``(B, H, W)`` labels: argmax + 1 of ``(B, K, H, W)`` responsibilities inside the ROI."""
    return np.where(roi, resp.argmax(axis=1) + 1, 0)


def main() -> None:
    tune_cpu_allocator()  # as the command line does (DEEPGMM_MALLOC_TUNING=0: off)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--model", choices=("deepg", "deepsvg"), default="deepg")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--refine", type=int, default=50)
    parser.add_argument("--refine-lam", type=float, default=None,
                        help="penalty weight while refining (default: the training lam 1)")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--penalty", choices=("batch", "slice"), default="batch",
                        help="mu_data penalty on the mini-batch mean (published) or per slice")
    parser.add_argument("--clip-norm", type=float, default=12.0, help="0: no clipping")
    parser.add_argument("--label-weights", type=float, nargs="+", default=[0.0],
                        help="cross-entropy weights on the 10 slices that define mu_data "
                             "(one run per weight and seed)")
    parser.add_argument("--labelled-slices", type=int, default=10,
                        help="training slices whose labels the cross-entropy uses (drawn "
                             "as mu_data's, seed 42)")
    parser.add_argument("--test-patients", nargs="+", default=list(MYOPS_DEV_TEST),
                        help="held-out patients (default: the paper's five)")
    parser.add_argument("--exclude", nargs="+", default=[],
                        help="patients used neither for training nor for testing (e.g. the "
                             "paper's test patients, for a validation split inside the "
                             "training patients)")
    parser.add_argument("--tta", action="store_true",
                        help="also predict with test-time augmentation (8 symmetries)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="training and prediction arithmetic (deepgmm.fit.precision)")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args()

    volumes = load_dataset(args.root)
    test_ids = set(args.test_patients)
    train_vols = [v for v in volumes
                  if v.case_id not in test_ids and v.case_id not in set(args.exclude)]
    test_vols = [v for v in volumes if v.case_id in test_ids]
    train_batch = make_batch(train_vols, crop_size=(160, 160), require_labels=True)
    test_batch = make_batch(test_vols, crop_size=(160, 160), require_labels=True)
    truth = test_batch.labels.numpy()
    roi = test_batch.roi.numpy()
    print(f"train: {len(train_vols)} patients, {len(train_batch)} slices; "
          f"test: {', '.join(sorted(test_ids))}, {len(test_batch)} slices; "
          f"model {args.model}, lam 1, penalty {args.penalty}, clip {args.clip_norm:g}, "
          "no matching")

    header = (f"{'variant':<40}" + "".join(f"{n:>11}" for n in CLASS_NAMES)
              + f"{'NLL':>8}{'train s':>9}{'epochs':>7}{'pred s/sl':>10}")
    print(header, flush=True)
    scores: dict[str, list[np.ndarray]] = {}
    for weight, seed in [(w, s) for w in args.label_weights for s in args.seeds]:
        tag = f", labels {weight:g}" if len(args.label_weights) > 1 or weight else ""
        tag += ", bf16" if args.precision == "bf16" else ""
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            res = train_network(train_batch, model=args.model, lam=1.0, epochs=args.epochs,
                                seed=seed, device=args.device, run_dir=Path(tmp) / "run",
                                progress=args.progress, penalty=args.penalty,
                                clip_norm=args.clip_norm or None,
                                label_weight=weight,
                                labelled_slices=args.labelled_slices,
                                precision=args.precision)
            train_s = time.perf_counter() - t0
            variants = [(refine, False) for refine in sorted({0, args.refine})]
            variants += [(0, True)] if args.tta else []
            for refine, tta in variants:
                t1 = time.perf_counter()
                out = predict(Path(tmp) / "run", test_batch, refine=refine,
                              refine_lam=args.refine_lam, tta=tta, device=args.device,
                              progress=args.progress)
                pred_s = (time.perf_counter() - t1) / len(test_batch)
                dice = dice_per_class(label_map(out.responsibilities.numpy(), roi), truth)
                mean = np.nanmean(dice, axis=0)
                name = ("trained + tta" if tta else "trained" if refine == 0
                        else f"trained + refine {refine}") + tag
                scores.setdefault(name, []).append(np.append(mean, out.nll.mean().item()))
                print(f"{f'{name}, seed {seed}':<40}" + "".join(f"{d:>11.3f}" for d in mean)
                      + f"{out.nll.mean().item():>8.3f}{train_s:>9.1f}"
                      f"{res.n_epochs:>7d}{pred_s:>10.3f}", flush=True)
    if len(args.seeds) > 1:
        for name, values in scores.items():
            avg = np.mean(values, axis=0)
            print(f"{f'{name}, mean of {len(values)} seeds':<40}"
                  + "".join(f"{d:>11.3f}" for d in avg[:-1]) + f"{avg[-1]:>8.3f}")
    pub = PUBLISHED[args.model]
    print(f"{'published code (METHOD.md)':<40}" + "".join(f"{d:>11.2f}" for d in pub[:4])
          + f"{pub[4]:>8.2f}")


if __name__ == "__main__":
    main()
