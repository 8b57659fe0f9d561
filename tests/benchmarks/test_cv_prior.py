"""benchmarks/cv_quality.py, prior="all" entries: the class prior comes from the training
fold's μ_data slices only."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path

import numpy as np

from deepgmm.data.class_prior import compute_class_prior
from deepgmm.data.mu_data import compute_mu_data, draw_slices
from deepgmm.data.slices import make_batch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "cv_quality.py"
CROP = (64, 64)


def _load_script():
    spec = importlib.util.spec_from_file_location("cv_quality", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["cv_quality"] = module
    spec.loader.exec_module(module)
    return module


cvq = _load_script()


def _fold(volumes, mu_seed: int):  # noqa: ANN001, ANN202
    train, test = cvq.fold_batches(volumes, ("104",), crop_size=CROP)
    return cvq.FoldData(train=train, test=test,
                        mu_data=compute_mu_data(train, n_slices=cvq.N_MU_SLICES, seed=mu_seed),
                        mu_slices=draw_slices(len(train), cvq.N_MU_SLICES, mu_seed), seed=0,
                        mu_seed=mu_seed)


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
