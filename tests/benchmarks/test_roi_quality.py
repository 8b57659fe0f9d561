"""benchmarks/roi_quality.py: the folds are cv_quality's, the tables hold what was scored."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


roiq = _load("roi_quality")


def test_folds_are_those_of_cv_quality():
    cvq = sys.modules.get("cv_quality") or _load("cv_quality")
    assert roiq.FOLDS == cvq.FOLDS


def test_tables_from_hand_made_scores():
    scores = [roiq.CaseScore(1, "109", 0.9, [0.8, 1.0], 2.0),
              roiq.CaseScore(1, "114", 0.8, [0.6, float("nan")], 4.0),
              roiq.CaseScore(2, "101", 0.95, [0.95], 1.0)]
    text = roiq.format_tables(scores, {1: 100.0, 2: float("nan")})
    lines = text.splitlines()
    assert "| 1 | 114 | 2 | 0.800 | 0.600 | 0.600 | 4.0 |" in lines
    # fold 1: per-case 0.85 +- 0.05; per-slice over 0.8, 1.0, 0.6 (NaN = no LV either way)
    mean = np.mean([0.8, 1.0, 0.6])
    sd = np.std([0.8, 1.0, 0.6])
    assert (f"| 1 | 2 | 4 | 0.850 ± 0.050 | {mean:.3f} ± {sd:.3f} | 0.800 | 3.0 / 4.0 | 100 |"
            in lines)
    assert any(line.startswith("| 2 | 1 | 1 | 0.950 ± 0.000") and line.endswith("| – |")
               for line in lines)
    assert any(line.startswith("| all | 3 | 5 |") for line in lines)


def test_unknown_fold_refused(capsys):
    with pytest.raises(SystemExit, match="--folds"):
        roiq.main(["--folds", "7"])
