"""The public API: every exported name resolves to the object its module defines, and
``import deepgmm`` stays light."""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import subprocess
import sys

import pytest

import deepgmm

NAMES = sorted(set(deepgmm.__all__) - {"__version__"})


@pytest.mark.parametrize("name", NAMES)
def test_exported_names_resolve(name: str) -> None:
    obj = getattr(deepgmm, name)
    module = importlib.import_module(deepgmm._API[name])
    assert obj is getattr(module, name)  # the module's own object, not a copy or stub
    assert obj.__name__ == name and obj.__module__.startswith("deepgmm.")
    assert inspect.getdoc(obj), f"{name} has no docstring"
    if inspect.isfunction(obj):
        sig = inspect.signature(obj)
        assert sig.return_annotation is not inspect.Signature.empty, name
        untyped = [p.name for p in sig.parameters.values()
                   if p.annotation is inspect.Parameter.empty
                   and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
        assert not untyped, f"{name}: parameters without type hints {untyped}"
    else:
        assert inspect.isclass(obj), name
    assert name in dir(deepgmm)


def test_all_lists_exactly_the_api_and_the_version() -> None:
    assert deepgmm.__all__ == ["__version__", *deepgmm._API]
    assert len(set(deepgmm.__all__)) == len(deepgmm.__all__)
    assert dir(deepgmm) == sorted(deepgmm.__all__)
    assert deepgmm.__version__ == importlib.metadata.version("deepgmm")


def test_the_estimators_and_functions_behave_as_exported() -> None:
    """A few exported names used the documented way, through the package."""
    import torch
    from sklearn.base import BaseEstimator

    assert issubclass(deepgmm.SpatiallyVariantEM, deepgmm.GaussianMixtureEM)
    assert issubclass(deepgmm.GaussianMixtureEM, BaseEstimator)
    gen = torch.Generator().manual_seed(0)
    image = torch.cat([torch.randn(1, 1, 8, 4, generator=gen),
                       torch.randn(1, 1, 8, 4, generator=gen) + 6.0], dim=3)
    roi = torch.ones(1, 8, 8, dtype=torch.bool)
    est = deepgmm.GaussianMixtureEM(n_components=2, init="kmeans").fit(image, roi)
    labels = est.predict(image, roi)[0]
    # the two halves of the image are two clusters
    assert labels[:, :4].unique().numel() == 1 and labels[:, 4:].unique().numel() == 1
    assert labels[0, 0] != labels[0, 7]


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_thing"):
        deepgmm.no_such_thing  # noqa: B018


def test_import_does_not_load_torch() -> None:
    code = "import sys, deepgmm; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
