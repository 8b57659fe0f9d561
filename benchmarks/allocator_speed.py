"""CPU speed with and without the malloc tuning of :mod:`deepgmm.allocator`.

``mallopt`` changes a whole process, so each measurement runs in a fresh subprocess, with
``DEEPGMM_MALLOC_TUNING=0`` (glibc's defaults) or ``1`` (large blocks from the heap, freed
heap kept), alternating the two settings ``--rounds`` times so that drift on a shared
machine hits both alike.

    .venv/bin/python benchmarks/allocator_speed.py [--data myops|phantom] [--rounds 2]

Workloads: deepG per-slice fitting (8 slices at once and 1 slice, 160 x 160, 11 iterations,
seconds per iteration of one slice), one training epoch of one network on 16 slices
(batch 4), and the deepG loss forward + backward on 16 slices (``gmm_nll``). Prints the
median time per setting and the ratio; results (NLL) must agree between the settings.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_ROOT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "myops2020"
WORKLOADS = ("fit8", "fit1", "train", "nll")
LABELS = {
    "fit8": "deepG fit, 8 slices at once (s/iteration/slice)",
    "fit1": "deepG fit, 1 slice (s/iteration)",
    "train": "training, 1 epoch of 16 slices (s)",
    "nll": "gmm_nll forward + backward, 16 slices (ms)",
}


def _slices(data: str, root: Path, n: int):
    """``n`` all-class slices of 160 x 160 from MyoPS or the phantom (as fit_speed.py)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from fit_speed import load_slices, take

    return take(load_slices(data, root, n), n)


def worker(name: str, data: str, root: Path) -> dict[str, float]:
    """Run one workload in this process; returns ``{"seconds", "check"}``."""
    import deepgmm  # noqa: F401  (sets the OpenMP wait policy before torch loads)
    from deepgmm.allocator import tune_cpu_allocator

    tune_cpu_allocator()  # follows DEEPGMM_MALLOC_TUNING
    import torch

    torch.set_num_threads(2)
    if name in ("fit8", "fit1"):
        from deepgmm.fit.single import fit_slices

        n = 8 if name == "fit8" else 1
        batch = _slices(data, root, n)
        res = fit_slices(batch, model="deepg", min_iter=11, max_iter=11, device="cpu",
                         progress=False)
        return {"seconds": float(res.seconds.sum()) / (n * 11), "check": float(res.nll.sum())}
    if name == "train":
        from deepgmm.fit.train import train_network

        batch = _slices(data, root, 16)
        t0 = time.perf_counter()
        res = train_network(batch, model="deepg", lam=0.0, epochs=1, min_epochs=1,
                            device="cpu", progress=False)
        return {"seconds": time.perf_counter() - t0, "check": res.nll_history[-1]}
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from nll_speed import make_inputs, time_call

    from deepgmm.mixture import gmm_nll

    image, logits, roi = make_inputs(torch.device("cpu"))
    resp = torch.softmax(logits, dim=1).requires_grad_(True)
    out = {}

    def call() -> None:
        nll, _ = gmm_nll(resp, image, roi)
        nll.sum().backward()
        out["check"] = float(nll.sum())

    ms = time_call(call, torch.device("cpu"), 50, (resp,))
    return {"seconds": ms, "check": out["check"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=("myops", "phantom"), default="myops")
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    parser.add_argument("--worker", choices=WORKLOADS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.data, args.root)))
        return
    if args.data == "myops" and not args.root.is_dir():
        raise SystemExit(f"no MyoPS data at {args.root}: pass --root or --data phantom")

    print(f"data: {args.data}; {args.rounds} alternating rounds per setting; CPU, 2 threads")
    print(f"{'workload':<48} {'glibc default':>14} {'tuned':>10} {'speed-up':>9}")
    for name in args.workloads:
        times: dict[str, list[float]] = {"0": [], "1": []}
        checks: dict[str, set[float]] = {"0": set(), "1": set()}
        for _ in range(args.rounds):
            for setting in ("0", "1"):
                env = {**os.environ, "DEEPGMM_MALLOC_TUNING": setting}
                proc = subprocess.run(
                    [sys.executable, __file__, "--worker", name, "--data", args.data,
                     "--root", str(args.root)], env=env, capture_output=True, text=True,
                    check=True)
                result = json.loads(proc.stdout.strip().splitlines()[-1])
                times[setting].append(result["seconds"])
                checks[setting].add(round(result["check"], 6))
        if checks["0"] != checks["1"]:
            raise SystemExit(f"{name}: results differ between the settings: {checks}")
        off, on = statistics.median(times["0"]), statistics.median(times["1"])
        print(f"{LABELS[name]:<48} {off:14.3f} {on:10.3f} {off / on:8.2f}x", flush=True)


if __name__ == "__main__":
    main()
