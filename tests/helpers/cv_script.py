"""``benchmarks/cv_quality.py`` loaded as a module, and a one-fold :class:`FoldData` of the
phantom for its entries' tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from deepgmm.data.mu_data import compute_mu_data, draw_slices

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "cv_quality.py"
CROP = (64, 64)


def load_cv_quality() -> ModuleType:
    """The script as module ``cv_quality`` (loaded once per test session)."""
    if "cv_quality" in sys.modules:
        return sys.modules["cv_quality"]
    spec = importlib.util.spec_from_file_location("cv_quality", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["cv_quality"] = module
    spec.loader.exec_module(module)
    return module


def phantom_fold(volumes, mu_seed: int):  # noqa: ANN001, ANN201
    """Fold data with phantom case 104 as the test fold, μ_data drawn with ``mu_seed``."""
    cvq = load_cv_quality()
    train, test = cvq.fold_batches(volumes, ("104",), crop_size=CROP)
    return cvq.FoldData(train=train, test=test,
                        mu_data=compute_mu_data(train, n_slices=cvq.N_MU_SLICES, seed=mu_seed),
                        mu_slices=draw_slices(len(train), cvq.N_MU_SLICES, mu_seed), seed=0,
                        mu_seed=mu_seed)
