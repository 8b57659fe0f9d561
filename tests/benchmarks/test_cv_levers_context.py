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
    assert seen["model"] == "deepsvg"
    assert seen["lam"] == 1.0 and seen["penalty"] == "batch" and seen["seed"] == 1


def test_qda_with_context_fits_the_training_fold_with_two_more_features(phantom_volumes
                                                                         ) -> None:
    import torch
    from sklearn.discriminant_analysis import QuadraticDiscriminantAnalysis

    from deepgmm.nets.context import context_channels

    train, test = cvq.fold_batches(phantom_volumes, ("104",), crop_size=(64, 64))
    out = cvq.run_unit(cvq.REGISTRY["qda-ctx-distrad"], train, test, seed=0, mu_seed=42,
                       device="cpu")
    roi = train.roi.numpy()
    features = torch.cat([train.image, context_channels(train.roi, "distance+radius")], 1)
    x = features.numpy().transpose(0, 2, 3, 1)[roi].astype(np.float64)
    ref = QuadraticDiscriminantAnalysis(store_covariance=True).fit(x, train.labels.numpy()[roi])
    assert out.learned["means"].shape == (4, 5)
    np.testing.assert_allclose(out.learned["means"], ref.means_, rtol=1e-6)
    assert out.probs.shape == (len(test), 4, 64, 64)
    inside = test.roi.numpy()
    np.testing.assert_allclose(out.probs.sum(axis=1)[inside], 1.0, atol=1e-5)
