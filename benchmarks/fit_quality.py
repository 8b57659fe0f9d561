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
:mod:`deepgmm.fit.precision`), one after the other. ``--settings`` fits every model and seed
under each named setting of ``benchmarks/fit_settings.py`` (``default``, ``stop=labels``,
``base_filters=16``, ``lr_warmup=5,lr_half_life=20``, ``init=RUN,max_iter=10,lam=1``, ...;
a setting with ``lam > 0`` is scored without an oracle, class order from μ_data; a warm
start runs its first seed only, it draws nothing at random); the ``ratio`` column is each
row's seconds per slice over the first setting's (same model, precision and seed).

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
from fit_settings import fit_arguments, parse_setting

from deepgmm._atomic import atomic_path
from deepgmm.allocator import tune_cpu_allocator
from deepgmm.data.dataset import load_dataset
from deepgmm.data.mu_data import compute_mu_data
from deepgmm.data.myops import MYOPS_DEV_TEST
from deepgmm.data.slices import make_batch
from deepgmm.evaluate.matching import apply_permutation, match_clusters
from deepgmm.evaluate.metrics import dice_per_class
from deepgmm.fit.precision import PRECISIONS
from deepgmm.fit.scheduler import StoppingRule
from deepgmm.fit.single import fit_slices
from deepgmm.fit.warm import load_warm_start
from deepgmm.types import CLASS_NAMES, SegmentationResult

DEFAULT_ROOT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "myops2020"
PUBLISHED = {  # docs/METHOD.md: published code, single slice, lam = 0, greedy rule
    "deepg": (0.80, 0.81, 0.05, 0.59, 2.67, 81),
    "deepsvg": (0.79, 0.81, 0.09, 0.59, 1.56, 95),
}


def label_map(resp: np.ndarray, roi: np.ndarray) -> np.ndarray:
    """``(B, H, W)`` labels: argmax + 1 of ``(B, K, H, W)`` responsibilities inside the ROI."""
    return np.where(roi, resp.argmax(axis=1) + 1, 0)


class Tracer:
    """Records every iteration's NLL and label map of each slice (``fit_slices(observe=)``)
    and replays stopping rules on them (:class:`deepgmm.fit.scheduler.StoppingRule` itself,
    fed the recorded values): a rule's result is the label map and NLL at the iteration it
    stops. A slice's arithmetic does not depend on when the others stop, so a rule replayed
    on a trace stops where a fit with that rule would."""

    def __init__(self, n_slices: int) -> None:
        self.nll: list[list[float]] = [[] for _ in range(n_slices)]
        self.labels: list[list[torch.Tensor]] = [[] for _ in range(n_slices)]

    def __call__(self, ids: torch.Tensor, nll: torch.Tensor, logits: torch.Tensor) -> None:
        labels = logits.argmax(dim=1).to("cpu", torch.int8)
        for j, i in enumerate(ids.tolist()):
            self.nll[i].append(float(nll[j]))
            self.labels[i].append(labels[j])

    def replay(self, name: str, roi: torch.Tensor, base: dict, max_iter: int
               ) -> SegmentationResult:
        """The outcome of rule ``name`` (``published``: ``base``'s tol / min_iter /
        max_iter; ``labels:TOL[:WINDOW]``; ``iter:N``) on the trace; a slice whose rule
        has not fired by the end of the trace stops there (counted in the log)."""
        kind, *params = name.split(":")
        b = len(self.nll)
        kwargs: dict = {"stop": "published"}
        tol, min_iter, cap = float(base["tol"]), int(base["min_iter"]), int(base["max_iter"])
        if kind == "labels":
            kwargs = {"stop": "labels", "label_tol": float(params[0]),
                      "label_window": int(params[1]) if len(params) > 1 else 5}
        elif kind == "iter":
            min_iter = cap = int(params[0])
        elif kind != "published":
            raise SystemExit(f"error: --replay {name!r}: expected published, "
                             "labels:TOL[:WINDOW] or iter:N")
        rule = StoppingRule(b, tol, min_iter, cap, str, 0.0, roi=roi.to(torch.bool), **kwargs)
        stop = torch.zeros(b, dtype=torch.int64)
        running = torch.arange(b)
        for t in range(max_iter):
            if not len(running):
                break
            nll = torch.tensor([self.nll[i][t] for i in running.tolist()], dtype=torch.float64)
            labels = torch.stack([self.labels[i][t] for i in running.tolist()])
            done = rule.update(running, nll, labels)
            stop[running[done]] = t + 1
            running = running[~done]
        if len(running):
            print(f"  {name}: {len(running)} slices had not stopped after {max_iter} "
                  "iterations (stopped there)")
            stop[running] = max_iter
        labels = torch.stack([self.labels[i][int(stop[i]) - 1] for i in range(b)]).long()
        k = 4
        resp = torch.nn.functional.one_hot(labels, k).permute(0, 3, 1, 2).float()
        nll = torch.tensor([self.nll[i][int(stop[i]) - 1] for i in range(b)])
        return SegmentationResult(responsibilities=resp, nll=nll, n_iter=stop,
                                  seconds=torch.zeros(b, dtype=torch.float64),
                                  means=torch.zeros(b, k, 1), method="trace")


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
    parser.add_argument("--settings", nargs="+", default=["default"],
                        help="named settings (benchmarks/fit_settings.py)")
    parser.add_argument("--trace", type=int, default=0, metavar="ITER",
                        help="fit every slice for exactly ITER iterations, recording NLL and "
                        "label map, and score the stopping rules of --replay on the trace")
    parser.add_argument("--replay", nargs="+", default=["published", "labels:0.001"],
                        help="rules for --trace: published, labels:TOL[:WINDOW], iter:N")
    parser.add_argument("--json", type=Path, default=None, help="per-slice results to save")
    args = parser.parse_args()
    settings = {spec: parse_setting(spec) for spec in args.settings}
    torch.set_num_threads(args.threads)

    test_ids = [str(p) for p in args.patients]
    test_vols = load_dataset(args.root, test_ids)
    batch = make_batch(test_vols, crop_size=(160, 160), require_labels=True)
    truth, roi = batch.labels.numpy(), batch.roi.numpy()
    mu_data = None
    if args.lam > 0 or any(float(v.get("lam", 0)) > 0 for v in settings.values()):
        train_vols = load_dataset(args.root, exclude=test_ids)
        train_batch = make_batch(train_vols, crop_size=(160, 160), require_labels=True)
        mu_data = compute_mu_data(train_batch, 10, 42)
        print(f"mu_data from 10 of {len(train_batch)} all-class slices of "
              f"{len(train_vols)} other patients (seed 42)")
    print(f"test: {', '.join(test_ids)}, {len(batch)} slices; lam {args.lam}; U-Net depth "
          f"{args.depth}, base filters {args.base_filters}; lr {args.lr}, tol {args.tol}, "
          f"iterations {args.min_iter}..{args.max_iter}; {torch.get_num_threads()} threads")

    names = [f"{spec}|{r}" for spec in settings for r in args.replay] if args.trace \
        else list(settings)
    width = max(9, *(len(name) + 1 for name in names))
    header = (f"{'model':<9}{'setting':<{width}}{'prec':<5}{'seed':>5} {'matching':<10}"
              + "".join(f"{n:>11}" for n in CLASS_NAMES)
              + f"{'NLL':>8}{'iter':>7}{'s/slice':>9}{'ratio':>7}")
    rows: list[str] = []
    means: dict[tuple[str, str, str, str], list[np.ndarray]] = {}
    record: list[dict[str, object]] = []
    first_seconds: dict[tuple[str, str, int], float] = {}
    base = {"lam": args.lam, "tol": args.tol, "min_iter": args.min_iter,
            "max_iter": args.max_iter, "lr": args.lr, "device": args.device,
            "concurrent": args.batch_size,
            "net_config": {"depth": args.depth, "base_filters": args.base_filters}}
    runs = [(model, spec, precision, seed) for model in args.models for spec in settings
            for precision in args.precisions for seed in args.seeds
            if "init" not in settings[spec] or seed == args.seeds[0]]

    def fit_one(model: str, spec: str, precision: str, seed: int) -> None:
        setting = settings[spec]
        fit_args = fit_arguments(setting, base)
        if "init" in setting:
            warm = load_warm_start(setting["init"], batch, {
                k: v for k, v in fit_args["net_config"].items() if k in ("depth",
                                                                        "base_filters")})
            fit_args["net_config"], fit_args["init_state"] = warm.network, warm.state
        lam = float(fit_args["lam"])
        rules = ["none"] if lam > 0 else ["greedy", "hungarian"]
        tracer = Tracer(len(batch)) if args.trace else None
        if tracer is not None:
            fit_args["min_iter"] = fit_args["max_iter"] = args.trace
        t0 = time.perf_counter()
        res = fit_slices(batch, model=model, mu_data=mu_data if lam > 0 else None, seed=seed,
                         progress=args.progress, precision=precision,
                         observe=tracer, **fit_args)
        wall = time.perf_counter() - t0
        if tracer is None:
            outcomes = [(spec, res, wall / len(batch))]
        else:
            per_iter = wall / float(res.n_iter.sum())
            outcomes = []
            for name in args.replay:
                replayed = tracer.replay(name, batch.roi, base, fit_args["max_iter"])
                outcomes.append((f"{spec}|{name}", replayed,
                                 per_iter * float(replayed.n_iter.double().mean())))
        for name, res, per_slice in outcomes:
            ratio = per_slice / first_seconds.setdefault((model, precision, seed), per_slice)
            score(model, name, precision, seed, res, per_slice, ratio, rules, lam)

    def score(model: str, spec: str, precision: str, seed: int, res: SegmentationResult,
              per_slice: float, ratio: float, rules: list[str], lam: float) -> None:
        for rule in rules:
            perm = match_clusters(res.responsibilities, truth, roi, rule)
            resp = apply_permutation(res.responsibilities, perm).numpy()
            dice = dice_per_class(label_map(resp, roi), truth)
            mean = np.nanmean(dice, axis=0)
            iters = res.n_iter.double()
            means.setdefault((model, spec, precision, rule), []).append(
                np.append(mean, [res.nll.mean().item(), iters.mean().item(), per_slice,
                                 ratio]))
            rows.append(f"{model:<9}{spec:<{width}}{precision:<5}{seed:>5} {rule:<10}"
                        + "".join(f"{d:>11.3f}" for d in mean)
                        + f"{res.nll.mean().item():>8.3f}"
                        f"{iters.mean().item():>7.1f}{per_slice:>9.2f}{ratio:>7.2f}")
            record.append({"model": model, "setting": spec, "precision": precision,
                           "seed": seed, "rule": rule, "lam": lam,
                           "case_ids": batch.case_ids, "slices": batch.slice_indices,
                           "dice": dice.tolist(), "nll": res.nll.tolist(),
                           "n_iter": res.n_iter.tolist(), "seconds": res.seconds.tolist()})
            print(rows[-1], f"(iterations {int(iters.min())}-{int(iters.max())})", flush=True)

    for model, spec, precision, seed in runs:
        fit_one(model, spec, precision, seed)
    print()
    print(header)
    for row in rows:
        print(row)
    if len(args.seeds) > 1:
        for (model, spec, precision, rule), values in means.items():
            avg = np.mean(values, axis=0)
            print(f"{model:<9}{spec:<{width}}{precision:<5}{'mean':>5} {rule:<10}"
                  + "".join(f"{d:>11.3f}" for d in avg[:4])
                  + f"{avg[4]:>8.3f}{avg[5]:>7.1f}{avg[6]:>9.2f}{avg[7]:>7.2f}"
                  + f"   ({len(values)} seeds)")
    for model in args.models:
        pub = PUBLISHED[model]
        print(f"{model:<9}{'':<{width}}{'':<5}{'pub':>5} {'greedy':<10}"
              + "".join(f"{d:>11.2f}" for d in pub[:4])
              + f"{pub[4]:>8.2f}{pub[5]:>7d}   (published code, METHOD.md)")
    if args.json is not None:
        with atomic_path(args.json) as tmp:
            tmp.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                       "results": record}, indent=1))


if __name__ == "__main__":
    main()
