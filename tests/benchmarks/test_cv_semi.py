"""benchmarks/cv_quality.py, semi-supervised entries: the cross-entropy uses exactly the
training fold's μ_data slices, the consistency term needs no labels."""

from __future__ import annotations

import pytest
from helpers.cv_script import load_cv_quality, phantom_fold

cvq = load_cv_quality()
_fold = phantom_fold


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
