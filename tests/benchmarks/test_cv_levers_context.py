"""benchmarks/cv_quality.py: the context-channel and Potts entries train what they say."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "cv_quality.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("cv_quality", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["cv_quality"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


cvq = _load_script()


class _Stop(Exception):
    pass


@pytest.mark.parametrize("config, normalise, options", [
    ("deepsvg-ctx-dist", "crop", {"context": "distance"}),
    ("deepsvg-ctx-distrad", "crop", {"context": "distance+radius"}),
    ("deepsvg-potts1", "crop", {"potts_weight": 1.0}),
    ("deepsvg-ctx-potts1", "crop", {"context": "distance+radius", "potts_weight": 1.0}),
    ("deepsvg-roinorm-ctx", "roi", {"context": "distance+radius"}),
    ("deepsvg-roinorm-potts1", "roi", {"potts_weight": 1.0}),
])
def test_entries_pass_their_options_to_training(config: str, normalise: str, options: dict,
                                                phantom_batch, monkeypatch) -> None:
    import deepgmm.fit.train as train_mod

    seen: dict = {}

    def capture(batch, **kwargs):
        seen.update(kwargs)
        raise _Stop

    monkeypatch.setattr(train_mod, "train_network", capture)
    method = cvq.REGISTRY[config]
    assert method.normalise == normalise
    fold = cvq.FoldData(train=phantom_batch, test=phantom_batch,
                        mu_data=np.zeros((4, 3)), mu_slices=np.arange(10), seed=1, mu_seed=43,
                        device="cpu")
    with pytest.raises(_Stop):
        method.run(fold)
    assert {k: seen[k] for k in options} == options
    assert seen["model"] == "deepsvg" and seen["normalisation"] == normalise
    assert seen["lam"] == 1.0 and seen["penalty"] == "batch" and seen["seed"] == 1
