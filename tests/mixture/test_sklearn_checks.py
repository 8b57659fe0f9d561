"""scikit-learn's estimator checks on the EM estimators.

The checks feed flat arrays ``X (n_samples, n_features)``, so the full set runs through
the thin adapters of ``tests/helpers/flat_em.py`` (X as one slice of ``n_samples x 1``
pixels, M = n_features, full ROI); the checks that need no data also run on
:class:`GaussianMixtureEM` and :class:`SpatiallyVariantEM` themselves.

Result with scikit-learn 1.9.1 (``legacy=True``, all checks it generates for a clusterer):

- ``FlatGaussianMixtureEM`` (fit / predict / predict_proba / score / labels_): 45 of the
  46 generated checks pass (the other is skipped, see below): estimator_cloneable,
  estimator_tags_renamed, valid_tag_types, estimator_repr, no_attributes_set_in_init,
  fit_score_takes_y,
  estimators_overwrite_params, dont_overwrite_parameters, estimators_fit_returns_self,
  readonly_memmap_input, estimators_unfitted, do_not_raise_errors_in_init_or_set_params,
  n_features_in_after_fitting, mixin_order, positive_only_tag_during_fit,
  estimators_dtypes, complex_data, dtype_object, estimators_empty_data_messages,
  pipeline_consistency, estimators_nan_inf, estimator_sparse_tag / _array / _matrix,
  estimators_pickle (twice), f_contiguous_array_estimator,
  clusterer_compute_labels_predict, clustering (twice), estimators_partial_fit_n_features,
  non_transformer_estimators_n_iter, parameters_default_constructible,
  methods_sample_order_invariance, methods_subset_invariance, fit2d_1sample,
  fit2d_1feature, get_params_invariance, set_params, dict_unchanged, fit_idempotent,
  fit_check_is_fitted, n_features_in, fit1d, fit2d_predict1d).
- ``FlatSpatiallyVariantEM`` (fit / labels_ only: its per-pixel weights belong to the
  fitted pixels, so there is no predict on new samples and the predict checks have
  nothing to call): the same 45 pass.
- Skipped for both: ``check_array_api_input`` (scikit-learn skips it unless
  ``SCIPY_ARRAY_API=1``; the estimators compute in PyTorch, not through the array API).
- On the estimators themselves: parameters_default_constructible, get_params_invariance,
  set_params, no_attributes_set_in_init, estimator_repr, estimator_cloneable,
  do_not_raise_errors_in_init_or_set_params pass; the checks that fit need the adapter.
"""

from __future__ import annotations

import warnings

import pytest
from helpers.flat_em import FlatGaussianMixtureEM, FlatSpatiallyVariantEM
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import estimator_checks
from sklearn.utils.estimator_checks import parametrize_with_checks

from deepgmm.mixture.em import GaussianMixtureEM, SpatiallyVariantEM

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@parametrize_with_checks([FlatGaussianMixtureEM(), FlatSpatiallyVariantEM()])
def test_sklearn_estimator_checks(estimator, check) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)


DATA_FREE_CHECKS = ("check_parameters_default_constructible", "check_get_params_invariance",
                    "check_set_params", "check_no_attributes_set_in_init",
                    "check_estimator_repr", "check_estimator_cloneable",
                    "check_do_not_raise_errors_in_init_or_set_params")


@pytest.mark.parametrize("cls", [GaussianMixtureEM, SpatiallyVariantEM])
@pytest.mark.parametrize("name", DATA_FREE_CHECKS)
def test_data_free_checks_on_the_estimators(cls: type, name: str) -> None:
    getattr(estimator_checks, name)(cls.__name__, cls())


def test_the_checks_cover_the_adapters() -> None:
    """The generator still yields the checks this module's docstring reports."""
    names = {getattr(c, "func", c).__name__ for _, c in
             estimator_checks.estimator_checks_generator(FlatGaussianMixtureEM(), legacy=True)}
    assert {"check_clustering", "check_methods_subset_invariance", "check_fit_idempotent",
            "check_estimators_nan_inf", "check_n_features_in"} <= names
