"""Where the wall time of one per-case run of a few MyoPS cases goes (EM-SVGMM).

    .venv/bin/python benchmarks/cohort_overhead.py --patients 101 102 103 104 [--workers 2]

Prints the run's total, the time spent starting and closing the local Dask cluster (with
``--workers``), in the merge, and each case's own time (load, fit, scores, case folder;
a worker's first case includes its imports), and a digest of the label maps written
(equal with and without ``--workers``). One thread per case. Needs the MyoPS 2020
training data.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_ROOT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "myops2020"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--patients", nargs="+", default=["101", "102", "103", "104"])
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()
    if not (args.root / "train25").is_dir():
        sys.exit(f"MyoPS 2020 data not found at {args.root} (expected train25/)")

    import deepgmm.cohort.cluster as cluster
    import deepgmm.cohort.merge as merge
    from deepgmm.cohort import ClusterOptions, segment_cohort

    marks: dict[str, float] = {}
    real_merge, real_client = merge.merge_cases, cluster.dask_client

    def timed_merge(*a, **k):  # noqa: ANN002, ANN003, ANN202
        start = time.perf_counter()
        try:
            return real_merge(*a, **k)
        finally:
            marks["merge"] = time.perf_counter() - start

    @contextlib.contextmanager
    def timed_client(**k):  # noqa: ANN003, ANN202
        start = time.perf_counter()
        with real_client(**k) as client:
            marks["cluster start"] = time.perf_counter() - start
            yield client
            start = time.perf_counter()
        marks["cluster close"] = time.perf_counter() - start

    merge.merge_cases = timed_merge
    cluster.dask_client = timed_client
    options = (ClusterOptions(resume=True) if args.workers is None
               else ClusterOptions(workers=args.workers))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        start = time.perf_counter()
        result = segment_cohort(args.root, out, model="em-svgmm", init="kmeans",
                                figures=False, progress=False, patients=args.patients,
                                cluster=options)
        total = time.perf_counter() - start
        digest = hashlib.sha256(b"".join(hashlib.sha256(p.read_bytes()).digest()
                                         for p in sorted(out.glob("*_seg*.nii.gz"))))
    cases = {c: o.seconds for c, o in result.outcomes.items()}
    print(f"workers {args.workers}, {len(cases)} cases: total {total:.2f} s; "
          + "; ".join(f"{k} {v:.2f} s" for k, v in marks.items())
          + f"; cases {sum(cases.values()):.2f} s ("
          + ", ".join(f"{c} {s:.2f}" for c, s in cases.items())
          + f"); maps {digest.hexdigest()[:16]}")


if __name__ == "__main__":
    main()
