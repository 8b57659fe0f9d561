"""benchmarks/gpu_rows.sh --smoke: every GPU row runs (tiny sizes, CPU) and ends in one table."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_gpu_rows_smoke_prints_every_row() -> None:
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_rows.sh"), "--smoke"],
                          capture_output=True, text=True, env=env, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    table = done.stdout.split("\nrow ")[1].splitlines()[1:]
    expected = [r"per-slice deepSVG fit, 9 slices at once +\d+\.\d+ s/slice .*3\.0 iterations",
                r"deepSVG training on 6 slices +\d+\.\d+ s +1 epochs",
                r"prediction +\d+ slices/s",
                r"deepG NLL forward \+ backward, 16 slices +\d+\.\d+ ms",
                r"deepSVG NLL forward \+ backward, 16 slices +\d+\.\d+ ms",
                r"EM-GMM \(k-means init\), 9 slices at once +\d+\.\d+ s",
                r"EM-SVGMM \(k-means init\), 9 slices at once +\d+\.\d+ s"]
    assert len(table) == len(expected), table
    for line, pattern in zip(table, expected, strict=True):
        assert re.match(pattern, line), (pattern, line)
    assert "device cpu" in done.stdout.splitlines()[0]
