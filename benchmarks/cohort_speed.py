"""Per-case runs of the MyoPS cohort: serial vs a local Dask cluster of N workers.

For EM-SVGMM and for per-slice deepSVG (a few iterations), the cohort is segmented one
case at a time twice: serially in this process (``ClusterOptions(resume=True)`` on an empty
folder, i.e. ``deepgmm em ... --resume``) and on a LocalCluster of ``--workers``
single-threaded workers (``--workers N``). Both write ``OUT/cases/<case>/`` and merge.

    .venv/bin/python benchmarks/cohort_speed.py [--root ../shared/data/myops2020]
        [--workers 2] [--patients 101 102 ...] [--deep-iter 5]

Prints per method: serial and Dask wall times, their ratio (the speed-up), the work per
case (the serial time of the case's unit of work), and Dask's overhead per case: (wall
time of the Dask run x workers - sum of the cases' own times) / cases, i.e. the worker
start-up, task transfer and merge costs spread over the cases. Checks that both runs wrote
byte-identical label maps. Needs the MyoPS 2020 training data; exits with a message when
they are absent.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_ROOT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "myops2020"

METHODS = {
    "em-svgmm": {"model": "em-svgmm", "init": "kmeans"},
    "deepsvg": {"model": "deepsvg", "min_iter": 1, "device": "cpu"},
}


def _maps(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.glob("*_seg*.nii.gz"))}


def run(root: Path, method: str, options: dict, cluster, out: Path,
        patients: list[str] | None) -> tuple[float, dict]:
    """Wall time and outcomes of one per-case run."""
    from deepgmm.cohort import segment_cohort

    start = time.perf_counter()
    result = segment_cohort(root, out, figures=False, progress=False, patients=patients,
                            cluster=cluster, **options)
    return time.perf_counter() - start, result.outcomes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--patients", nargs="*", default=None)
    parser.add_argument("--deep-iter", type=int, default=5,
                        help="deepSVG iterations per slice")
    parser.add_argument("--methods", nargs="*", default=list(METHODS))
    args = parser.parse_args()
    if not (args.root / "train25").is_dir():
        sys.exit(f"MyoPS 2020 data not found at {args.root} (expected train25/)")

    from deepgmm.cohort import ClusterOptions

    print(f"{'method':<10} {'cases':>5} {'serial s':>9} {'dask s':>8} {'ratio':>6} "
          f"{'s/case':>7} {'overhead s/case':>16}  identical maps")
    for method in args.methods:
        options = dict(METHODS[method])
        if method == "deepsvg":
            options["max_iter"] = args.deep_iter
        with tempfile.TemporaryDirectory() as tmp:
            serial_out, dask_out = Path(tmp) / "serial", Path(tmp) / "dask"
            t_serial, outcomes = run(args.root, method, options, ClusterOptions(resume=True),
                                     serial_out, args.patients)
            t_dask, dask_outcomes = run(args.root, method, options,
                                        ClusterOptions(workers=args.workers), dask_out,
                                        args.patients)
            same = _maps(serial_out) == _maps(dask_out)
            shutil.rmtree(tmp, ignore_errors=True)
        n = len(outcomes)
        work = sum(o.seconds for o in outcomes.values()) / n
        dask_work = sum(o.seconds for o in dask_outcomes.values())
        overhead = (t_dask * args.workers - dask_work) / n
        print(f"{method:<10} {n:>5} {t_serial:>9.1f} {t_dask:>8.1f} "
              f"{t_serial / t_dask:>6.2f} {work:>7.2f} {overhead:>16.2f}  {same}")


if __name__ == "__main__":
    main()
