"""Quality of single-slice deepG / deepSVG on MyoPS 2020: Dice per class on the test slices.

Fits a fresh network to each of the all-class slices of the test patients (default 109 114
117 120 122, 19 slices), all slices in one call, and prints the mean Dice over slices per
class. With ``--lam 0`` the clusters are assigned to classes with the ground truth (the
published greedy rule and the Hungarian rule, both from the same fits); with ``--lam > 0``
mu_data comes from 10 random all-class slices (seed 42) of the other patients and the class
order is the network's own (no matching).

    .venv/bin/python benchmarks/fit_quality.py [--root ../shared/data/myops2020]
        [--models deepg deepsvg] [--lam 0] [--seeds 0] [--base-filters 32] [--lr 1e-4]
        [--max-iter 200] [--batch-size 8] [--threads 2] [--precisions fp32 bf16]
        [--json out.json]

``--precisions fp32 bf16`` fits every model and seed in both arithmetic precisions (see
:mod:`deepgmm.fit.precision`), one after the other.

The published code's scores (docs/METHOD.md) are printed below the table.
"""

from __future__ import annotations

import deepgmm  # noqa: F401  (first: sets the OpenMP wait policy before torch loads)

# isort: split

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from deepgmm._atomic import atomic_path
from deepgmm.allocator import tune_cpu_allocator
from deepgmm.data.dataset import load_dataset
from deepgmm.data.mu_data import compute_mu_data
from deepgmm.data.myops import MYOPS_DEV_TEST
from deepgmm.data.slices import make_batch
from deepgmm.evaluate.matching import apply_permutation, match_clusters
from deepgmm.evaluate.metrics import dice_per_class
from deepgmm.fit.precision import PRECISIONS
from deepgmm.fit.single import fit_slices
from deepgmm.types import CLASS_NAMES

DEFAULT_ROOT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "myops2020"
PUBLISHED = {  # docs/METHOD.md: published code, single slice, lam = 0, greedy rule
    "deepg": (0.80, 0.81, 0.05, 0.59, 2.67, 81),
    "deepsvg": (0.79, 0.81, 0.09, 0.59, 1.56, 95),
}


def label_map(resp: np.ndarray, roi: np.ndarray) -> np.ndarray:
    """``(B, H, W)`` labels: argmax + 1 of ``(B, K, H, W)`` responsibilities inside the ROI."""
    return np.where(roi, resp.argmax(axis=1) + 1, 0)


def main() -> None:
    tune_cpu_allocator()  # as the command line does (DEEPGMM_MALLOC_TUNING=0: off)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--patients", nargs="+", default=list(MYOPS_DEV_TEST))
    parser.add_argument("--models", nargs="+", choices=("deepg", "deepsvg"),
                        default=["deepg", "deepsvg"])
    parser.add_argument("--lam", type=float, default=0.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--base-filters", type=int, default=32)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--tol", type=float, default=1e-3)
    parser.add_argument("--min-iter", type=int, default=10)
    parser.add_argument("--max-iter", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--precisions", nargs="+", default=["fp32"], choices=PRECISIONS)
    parser.add_argument("--json", type=Path, default=None, help="per-slice results to save")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    test_ids = [str(p) for p in args.patients]
    test_vols = load_dataset(args.root, test_ids)
    batch = make_batch(test_vols, crop_size=(160, 160), require_labels=True)
    truth, roi = batch.labels.numpy(), batch.roi.numpy()
    mu_data = None
    rules = ["greedy", "hungarian"]
    if args.lam > 0:
        train_vols = load_dataset(args.root, exclude=test_ids)
        train_batch = make_batch(train_vols, crop_size=(160, 160), require_labels=True)
        mu_data = compute_mu_data(train_batch, 10, 42)
        rules = ["none"]
        print(f"mu_data from 10 of {len(train_batch)} all-class slices of "
              f"{len(train_vols)} other patients (seed 42)")
    print(f"test: {', '.join(test_ids)}, {len(batch)} slices; lam {args.lam}; U-Net depth "
          f"{args.depth}, base filters {args.base_filters}; lr {args.lr}, tol {args.tol}, "
          f"iterations {args.min_iter}..{args.max_iter}; {torch.get_num_threads()} threads")

    header = (f"{'model':<9}{'prec':<5}{'seed':>5} {'matching':<10}"
              + "".join(f"{n:>11}" for n in CLASS_NAMES)
              + f"{'NLL':>8}{'iter':>7}{'s/slice':>9}")
    rows: list[str] = []
    means: dict[tuple[str, str, str], list[np.ndarray]] = {}
    record: list[dict[str, object]] = []
    runs = [(model, precision, seed) for model in args.models for precision in args.precisions
            for seed in args.seeds]
    for model, precision, seed in runs:
        t0 = time.perf_counter()
        res = fit_slices(batch, model=model, lam=args.lam, mu_data=mu_data, tol=args.tol,
                         min_iter=args.min_iter, max_iter=args.max_iter, lr=args.lr,
                         seed=seed, device=args.device, concurrent=args.batch_size,
                         net_config={"depth": args.depth,
                                     "base_filters": args.base_filters},
                         progress=args.progress, precision=precision)
        wall = time.perf_counter() - t0
        for rule in rules:
            perm = match_clusters(res.responsibilities, truth, roi, rule)
            resp = apply_permutation(res.responsibilities, perm).numpy()
            dice = dice_per_class(label_map(resp, roi), truth)
            mean = np.nanmean(dice, axis=0)
            means.setdefault((model, precision, rule), []).append(
                np.append(mean, [res.nll.mean().item(), res.n_iter.double().mean().item(),
                                 wall / len(batch)]))
            rows.append(f"{model:<9}{precision:<5}{seed:>5} {rule:<10}"
                        + "".join(f"{d:>11.3f}" for d in mean)
                        + f"{res.nll.mean().item():>8.3f}"
                        f"{res.n_iter.double().mean().item():>7.1f}{wall / len(batch):>9.2f}")
            record.append({"model": model, "precision": precision, "seed": seed,
                           "rule": rule, "lam": args.lam,
                           "case_ids": batch.case_ids, "slices": batch.slice_indices,
                           "dice": dice.tolist(), "nll": res.nll.tolist(),
                           "n_iter": res.n_iter.tolist(), "seconds": res.seconds.tolist()})
        print(rows[-1], flush=True)
    print()
    print(header)
    for row in rows:
        print(row)
    if len(args.seeds) > 1:
        for (model, precision, rule), values in means.items():
            avg = np.mean(values, axis=0)
            print(f"{model:<9}{precision:<5}{'mean':>5} {rule:<10}"
                  + "".join(f"{d:>11.3f}" for d in avg[:4])
                  + f"{avg[4]:>8.3f}{avg[5]:>7.1f}{avg[6]:>9.2f}")
    for model in args.models:
        pub = PUBLISHED[model]
        print(f"{model:<9}{'':<5}{'pub':>5} {'greedy':<10}"
              + "".join(f"{d:>11.2f}" for d in pub[:4])
              + f"{pub[4]:>8.2f}{pub[5]:>7d}   (published code, METHOD.md)")
    if args.json is not None:
        with atomic_path(args.json) as tmp:
            tmp.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                       "results": record}, indent=1))


if __name__ == "__main__":
    main()
