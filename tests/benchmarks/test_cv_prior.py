"""benchmarks/cv_quality.py, prior="all" entries: the class prior comes from the training
fold's μ_data slices only."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from helpers import cv_script
from helpers.cv_script import load_cv_quality, phantom_fold

from deepgmm.data.class_prior import compute_class_prior
from deepgmm.data.slices import make_batch

cvq = load_cv_quality()
CROP = cv_script.CROP
_fold = phantom_fold


def test_class_prior_comes_from_the_training_fold_only(
        phantom_volumes, monkeypatch) -> None:  # noqa: ANN001
    fold = _fold(phantom_volumes, 43)
    stats = cvq.fold_class_prior(fold)
    train_only = make_batch([v for v in phantom_volumes if v.case_id != "104"],
                            crop_size=CROP, require_labels=True)
    ref = compute_class_prior(train_only, n_slices=10, seed=43)
    np.testing.assert_array_equal(stats.log_variances, ref.log_variances)
    np.testing.assert_array_equal(stats.weights, ref.weights)
    np.testing.assert_array_equal(stats.means, fold.mu_data)
    # other intensities and labels in the test case change nothing
    altered = [dataclasses.replace(v, image=v.image * 1.7 + 30.0, labels=np.where(
        v.labels == 3, 4, np.where(v.labels == 4, 3, v.labels))) if v.case_id == "104" else v
        for v in phantom_volumes]
    again = cvq.fold_class_prior(_fold(altered, 43))
    np.testing.assert_array_equal(again.log_variances, stats.log_variances)
    np.testing.assert_array_equal(again.weights, stats.weights)
    # and the draw follows mu_seed (the phantom's 9 training slices are all drawn with 10)
    monkeypatch.setattr(cvq, "N_MU_SLICES", 4)
    draws = [cvq.fold_class_prior(_fold(phantom_volumes, s)) for s in (43, 44)]
    assert not np.array_equal(draws[0].weights, draws[1].weights)
    np.testing.assert_array_equal(
        draws[1].weights, compute_class_prior(train_only, n_slices=4, seed=44).weights)
    assert {"deepsvg-prior", "deepsvg-prior-roinorm"} <= set(cvq.REGISTRY)


class _Stop(Exception):
    pass


@pytest.mark.parametrize("config, normalise, options", [
    ("deepsvg-prior", "crop", {"prior": "all", "lam_var": 1.0, "lam_weights": 1.0}),
    ("deepsvg-prior-roinorm", "roi", {"prior": "all", "lam_var": 1.0, "lam_weights": 1.0}),
    ("deepsvg-2comp", "crop", {"components_per_class": 2}),
    ("deepsvg-ctx-prior", "crop", {"context": "distance+radius", "prior": "all",
                                   "lam_var": 1.0, "lam_weights": 1.0}),
    ("deepsvg-ctx-2comp", "crop", {"context": "distance+radius", "components_per_class": 2}),
])
def test_entries_pass_their_options_to_training(config: str, normalise: str, options: dict,
                                                phantom_volumes, monkeypatch) -> None:  # noqa: ANN001
    import deepgmm.fit.train as train_mod

    seen: dict = {}

    def capture(batch, **kwargs):  # noqa: ANN001, ANN003, ANN202
        seen.update(kwargs)
        raise _Stop

    monkeypatch.setattr(train_mod, "train_network", capture)
    method = cvq.REGISTRY[config]
    assert method.normalise == normalise
    fold = _fold(phantom_volumes, 43)
    with pytest.raises(_Stop):
        method.run(fold)
    assert {k: seen[k] for k in options} == options
    assert seen["model"] == "deepsvg" and seen["lam"] == 1.0 and seen["penalty"] == "batch"
    for lever in ("context", "prior", "components_per_class", "potts_weight"):
        if lever not in options:
            assert lever not in seen  # left at train_network's published default
    if options.get("prior") == "all":
        ref = cvq.fold_class_prior(fold)
        np.testing.assert_array_equal(seen["class_prior"].log_variances, ref.log_variances)
        np.testing.assert_array_equal(seen["class_prior"].weights, ref.weights)
    else:
        assert "class_prior" not in seen
