"""benchmarks/cv_quality.py, semi-supervised entries: the cross-entropy uses exactly the
training fold's μ_data slices, the consistency term needs no labels."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from deepgmm.data.mu_data import compute_mu_data, draw_slices

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "cv_quality.py"
CROP = (64, 64)


def _load_script():
    spec = importlib.util.spec_from_file_location("cv_quality_semi", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["cv_quality_semi"] = module
    spec.loader.exec_module(module)
    return module


cvq = _load_script()


def _fold(volumes, mu_seed: int):  # noqa: ANN001, ANN202
    train, test = cvq.fold_batches(volumes, ("104",), crop_size=CROP)
    return cvq.FoldData(train=train, test=test,
                        mu_data=compute_mu_data(train, n_slices=cvq.N_MU_SLICES, seed=mu_seed),
                        mu_slices=draw_slices(len(train), cvq.N_MU_SLICES, mu_seed), seed=0,
                        mu_seed=mu_seed)


class _Stop(Exception):
    pass


@pytest.mark.parametrize("config, options", [
    ("deepsvg-ce1", {"label_weight": 1.0}),
    ("deepsvg-ctx-ce1", {"label_weight": 1.0, "context": "distance+radius"}),
    ("deepsvg-cons1", {"consistency_weight": 1.0}),
    ("deepsvg-ce1-cons1", {"label_weight": 1.0, "consistency_weight": 1.0}),
])
@pytest.mark.parametrize("mu_seed", [42, 43])
def test_entries_pass_their_options_and_mu_datas_slices(config: str, options: dict,
                                                        mu_seed: int, phantom_volumes,
                                                        monkeypatch) -> None:  # noqa: ANN001
    import deepgmm.fit.train as train_mod
    from deepgmm.fit.labelled import labelled_targets

    seen: dict = {}

    def capture(batch, **kwargs):  # noqa: ANN001, ANN003, ANN202
        seen.update(kwargs, batch=batch)
        raise _Stop

    monkeypatch.setattr(train_mod, "train_network", capture)
    fold = _fold(phantom_volumes, mu_seed)
    with pytest.raises(_Stop):
        cvq.REGISTRY[config].run(fold)
    assert {k: seen[k] for k in options} == options
    assert seen["batch"] is fold.train  # nothing of the test fold
    if "label_weight" in options:
        # The slices train_network will label are exactly μ_data's slices of this fold.
        _, chosen = labelled_targets(fold.train, seen["labelled_slices"],
                                     seed=seen["labelled_seed"])
        assert chosen.tolist() == sorted(fold.mu_slices.tolist())
    else:
        assert "labelled_seed" not in seen and "label_weight" not in seen
