"""The EM estimators as scikit-learn estimators: parameters stored as given, checked in fit,
``get_params`` / ``set_params`` / ``clone``, and ``em_segment`` reaching every parameter."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.base import clone

from deepgmm.errors import InputError
from deepgmm.mixture.em import GaussianMixtureEM, SpatiallyVariantEM, em_segment
from deepgmm.types import SliceBatch


def _data(b: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(b, 2, 12, 12, generator=gen), torch.ones(b, 12, 12, dtype=torch.bool)


def _batch() -> SliceBatch:
    image, roi = _data()
    return SliceBatch(image=image, roi=roi, labels=None, case_ids=["p", "p"],
                      slice_indices=[0, 1], crop_origins=np.zeros((2, 2), int),
                      full_shapes=np.full((2, 2), 12), sequences=("C0", "DE"))


@pytest.mark.parametrize("cls", [GaussianMixtureEM, SpatiallyVariantEM])
def test_parameters_are_the_constraint_table(cls: type[GaussianMixtureEM]) -> None:
    assert set(cls().get_params()) == set(cls._parameter_constraints)
    assert "seed" in cls._parameter_constraints and "random_state" not in cls().get_params()


def test_init_stores_arguments_as_given_and_fit_checks_them() -> None:
    est = SpatiallyVariantEM(tol=None, max_iter=0, smoothing=-1.0, covariance="tied")
    assert est.get_params()["tol"] is None  # not resolved in __init__
    assert (est.max_iter, est.smoothing, est.covariance) == (0, -1.0, "tied")
    image, roi = _data()
    with pytest.raises(InputError, match="'covariance' parameter of SpatiallyVariantEM"):
        est.fit(image, roi)


def test_get_set_params_and_clone() -> None:
    mu = torch.zeros(4, 2)
    est = SpatiallyVariantEM(n_components=4, init="mu_data", mu_data=mu, seed=5, smoothing=1.0)
    params = est.get_params()
    assert params["seed"] == 5 and params["mu_data"] is mu and params["smoothing"] == 1.0
    assert est.set_params(max_iter=7, tol=1e-5) is est
    assert (est.max_iter, est.tol) == (7, 1e-5)
    copy = clone(est)
    assert type(copy) is SpatiallyVariantEM and copy is not est
    got = copy.get_params()
    assert torch.equal(got.pop("mu_data"), mu)
    assert got == {k: v for k, v in est.get_params().items() if k != "mu_data"}
    with pytest.raises(ValueError, match="Invalid parameter 'lam'"):
        est.set_params(lam=1.0)
    # clone gives an unfitted estimator that fits to the same result
    image, roi = _data()
    a = GaussianMixtureEM(seed=3, max_iter=4, tol=0.0)
    with pytest.warns(Warning):
        a.fit(image, roi)
    b = clone(a)
    assert not hasattr(b, "means_")
    with pytest.warns(Warning):
        b.fit(image, roi)
    assert torch.equal(a.means_, b.means_)


def test_effective_tol_defaults() -> None:
    """tol=None means 2e-4 (GMM) and 1e-3 (SVGMM): the same fit as passing them."""
    image, roi = _data(seed=1)
    for cls, tol in ((GaussianMixtureEM, 2e-4), (SpatiallyVariantEM, 1e-3)):
        default = cls(init="kmeans", max_iter=500).fit(image, roi)
        explicit = cls(init="kmeans", max_iter=500, tol=tol).fit(image, roi)
        other = cls(init="kmeans", max_iter=500, tol=tol * 100).fit(image, roi)
        assert torch.equal(default.n_iter_, explicit.n_iter_)
        assert torch.equal(default.means_, explicit.means_)
        assert not torch.equal(default.n_iter_, other.n_iter_)


@pytest.mark.parametrize("name, value", [
    ("seed", -1), ("seed", 2**63), ("seed", True), ("seed", 1.5), ("n_components", 0),
    ("n_components", True), ("tol", -1e-3), ("tol", float("nan")), ("var_floor", 0.0),
    ("n_kmeans_init", 0), ("init", "kmeans++"), ("max_iter", 2.0), ("gmm_max_iter", 0),
    ("gmm_tol", -1.0), ("smoothing", float("inf")), ("device", 3),
])
def test_bad_parameters_name_themselves(name: str, value: object) -> None:
    image, roi = _data()
    with pytest.raises(InputError, match=f"'{name}' parameter of SpatiallyVariantEM"):
        SpatiallyVariantEM(**{name: value}).fit(image, roi)


def test_seed_bounds_are_accepted() -> None:
    image, roi = _data()
    for seed in (0, 2**63 - 1, np.int64(9), None):
        GaussianMixtureEM(seed=seed, max_iter=200).fit(image, roi)


@pytest.mark.parametrize("model, cls", [("em-gmm", GaussianMixtureEM),
                                        ("em-svgmm", SpatiallyVariantEM)])
def test_em_segment_reaches_every_parameter(model: str, cls: type[GaussianMixtureEM],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Every parameter of the estimator's table arrives unchanged at ``fit``."""
    values = {"n_components": 3, "covariance": "full", "init": "mu_data",
              "mu_data": torch.zeros(3, 2), "weights_init": torch.full((3,), 1 / 3),
              "covariances_init": torch.eye(2).expand(3, 2, 2), "tol": 1e-6, "max_iter": 9,
              "var_floor": 1e-5, "seed": 11, "device": "cpu", "n_kmeans_init": 2,
              "gmm_tol": 1e-7, "gmm_max_iter": 8, "smoothing": 0.5}
    values = {k: v for k, v in values.items() if k in cls._parameter_constraints}
    assert set(values) == set(cls._parameter_constraints)
    seen: dict[str, object] = {}

    class Reached(Exception):
        pass

    def record(self: GaussianMixtureEM, image: object, roi: object) -> None:
        seen.update(self.get_params())
        raise Reached

    monkeypatch.setattr(cls, "fit", record)
    with pytest.raises(Reached):
        em_segment(_batch(), model=model, **values)  # type: ignore[arg-type]
    assert seen.keys() == values.keys()
    for key, value in values.items():
        assert seen[key] is value, key


def test_em_segment_refuses_unknown_and_inapplicable_parameters() -> None:
    batch = _batch()
    with pytest.raises(InputError, match=r"em_segment\(model='em-gmm'\): unknown or "
                                         r"inapplicable options 'gmm_tol', 'smoothing'"):
        em_segment(batch, model="em-gmm", smoothing=1.0, gmm_tol=1e-3)
    with pytest.raises(InputError, match="inapplicable option 'random_state'"):
        em_segment(batch, model="em-svgmm", random_state=1)
    with pytest.raises(InputError, match="'max_iter' parameter of SpatiallyVariantEM"):
        em_segment(batch, model="em-svgmm", max_iter=-2)
