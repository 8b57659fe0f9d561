"""The options model: one table per dataclass, defaults equal to the methods' and the CLI's."""

from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import pytest
import torch
import typer

from deepgmm import options as O
from deepgmm.cli import app
from deepgmm.errors import InputError

CLASSES = [O.EMGMMOptions, O.EMSVGMMOptions, O.FitOptions, O.TrainOptions, O.PredictOptions]


@pytest.mark.parametrize("cls", CLASSES)
def test_every_field_has_one_constraint_row(cls: type[O.MethodOptions]) -> None:
    assert set(cls.CONSTRAINTS) == set(cls.names())
    cls()  # the defaults satisfy the table


def _defaults(func: object, *, skip: set[str] = frozenset()) -> dict[str, object]:
    return {name: p.default for name, p in inspect.signature(func).parameters.items()
            if p.default is not inspect.Parameter.empty and name not in skip}


def test_fit_options_are_fit_slices_keywords_with_its_defaults() -> None:
    from deepgmm.fit.single import fit_slices
    from deepgmm.nets.unet import UNet

    options = O.FitOptions()
    params = options.fit_params()
    signature = _defaults(fit_slices, skip={"mu_data", "init_state", "progress", "observe"})
    net = params.pop("net_config")
    assert {**params, "net_config": None} == signature
    unet = _defaults(UNet)
    assert net == {"n_classes": unet["n_classes"], "depth": unet["depth"],
                   "base_filters": unet["base_filters"]}


def test_train_options_are_train_network_keywords_with_its_defaults() -> None:
    from deepgmm.fit.train import train_network

    assert O.TrainOptions().as_dict() == _defaults(
        train_network, skip={"mu_data", "class_prior", "run_dir", "resume", "progress"})


def test_predict_options_are_predict_keywords_with_its_defaults() -> None:
    from deepgmm.fit.predict import predict

    assert O.PredictOptions().as_dict() == _defaults(predict, skip={"progress"})


@pytest.mark.parametrize(("cls", "model"), [(O.EMGMMOptions, "gmm"),
                                            (O.EMSVGMMOptions, "svgmm")])
def test_em_options_are_the_estimators_parameters_with_their_defaults(
        cls: type[O.EMGMMOptions], model: str) -> None:
    from deepgmm.mixture.em import GaussianMixtureEM, SpatiallyVariantEM

    estimator = GaussianMixtureEM if model == "gmm" else SpatiallyVariantEM
    defaults = _defaults(estimator.__init__, skip={"mu_data", "weights_init",
                                                   "covariances_init"})
    params = cls().estimator_params()
    assert params.pop("device") == "auto" and defaults.pop("device") is None  # run_method
    assert params == defaults                                                # resolves it


def test_allowed_values_agree_with_the_modules_that_check_them_too() -> None:
    from deepgmm.fit import stacked
    from deepgmm.fit.precision import PRECISIONS
    from deepgmm.fit.train import PENALTIES

    assert O.PRECISIONS == PRECISIONS
    assert O.MECHANISMS == stacked.MECHANISMS
    assert O.PENALTIES == PENALTIES


@pytest.mark.parametrize("cls", [O.EMGMMOptions, O.EMSVGMMOptions])
def test_em_options_reuse_the_estimators_tables(cls: type[O.EMGMMOptions]) -> None:
    from deepgmm.mixture.em import GaussianMixtureEM, SpatiallyVariantEM

    estimator = GaussianMixtureEM if cls is O.EMGMMOptions else SpatiallyVariantEM
    own = {"model", "device"}  # device also takes "auto" here (run_method resolves it)
    for name, rule in cls.CONSTRAINTS.items():
        if name not in own:
            assert rule is estimator._parameter_constraints[name], name


def _cli_defaults(command: str) -> dict[str, object]:
    group = typer.main.get_command(app)
    return {p.name: p.default for p in group.commands[command].params}  # type: ignore


# Where a command's default differs from the library's, on purpose (documented in --help).
CLI_OWN_DEFAULTS = {
    ("em", "init"): None,  # mu_data with --mu-data, else kmeans
    ("em", "model"): "em-gmm",
    ("fit", "model"): "deepsvg",
    ("fit", "min_iter"): None,  # 10, or --max-iter when that is smaller
    ("predict", "fusion"): None,  # the --recipe's (deepgmm: labelled; the library: none)
}


@pytest.mark.parametrize(("command", "cls"), [
    ("em", O.EMSVGMMOptions), ("fit", O.FitOptions), ("train", O.TrainOptions),
    ("predict", O.PredictOptions)])
def test_cli_defaults_are_the_options_defaults(command: str,
                                               cls: type[O.MethodOptions]) -> None:
    cli = _cli_defaults(command)
    lib = cls().as_dict()
    svgmm_only = {"gmm_tol", "gmm_max_iter", "smoothing"}
    for name, value in lib.items():
        if name not in cli:
            continue
        if (command, name) in CLI_OWN_DEFAULTS:
            assert cli[name] == CLI_OWN_DEFAULTS[command, name]
        elif command == "em" and (name in svgmm_only or name == "tol"):
            assert cli[name] is None  # given only when asked for: the model's default
        elif name == "device":
            assert cli[name] == "auto"
        else:
            assert cli[name] == value, (command, name, cli[name], value)


def test_segment_leaves_model_options_to_the_model() -> None:
    cli = _cli_defaults("segment")
    model_options = (set(O.FitOptions.names()) | set(O.EMSVGMMOptions.names())) - {
        "model", "seed", "device", "n_classes", "n_components"}
    assert {name: cli[name] for name in model_options} == dict.fromkeys(model_options)


def test_method_options_fills_defaults_and_refuses_what_a_model_lacks() -> None:
    opts = O.method_options("em-svgmm", {"smoothing": 4.0, "covariance": "full"},
                            caller="test")
    assert isinstance(opts, O.EMSVGMMOptions)
    assert (opts.smoothing, opts.covariance, opts.max_iter, opts.seed) == (4.0, "full", 100, 33)
    with pytest.raises(InputError, match=r"option 'smoothing' does not apply to model "
                                         r"'em-gmm' \(it takes n_components, covariance"):
        O.method_options("em-gmm", {"smoothing": 4.0}, caller="test")
    with pytest.raises(InputError, match="model is given twice"):
        O.method_options("deepg", {"model": "deepsvg"}, caller="test")
    with pytest.raises(InputError, match="given for model 'em-gmm'"):
        O.method_options("em-gmm", O.FitOptions(), caller="test")
    assert O.method_options("deepsvg", O.FitOptions(model="deepsvg"), caller="t").model == \
        "deepsvg"


@pytest.mark.parametrize(("cls", "values", "pattern", "names"), [
    (O.FitOptions, {"min_iter": 5, "max_iter": 2}, r"min_iter \(5\) must not exceed max_iter",
     ("min_iter", "max_iter")),
    (O.TrainOptions, {"epochs": 2, "min_epochs": 3}, "min_epochs .* must not exceed epochs",
     ("min_epochs", "epochs")),
    (O.PredictOptions, {"tta": True, "refine": 2}, "cannot be combined with refine",
     ("tta", "refine")),
    (O.FitOptions, {"seed": 2**63}, r"'seed' parameter of FitOptions must be an int in the "
     r"range \[0, 9223372036854775808\)", ("seed",)),
    (O.FitOptions, {"seed": True}, "'seed' parameter of FitOptions must be an int",
     ("seed",)),
    (O.FitOptions, {"device": "tpu"}, "'device' parameter .* 'cuda:<index>'", ("device",)),
    (O.EMGMMOptions, {"tol": float("inf")}, "'tol' parameter", ("tol",)),
    (O.TrainOptions, {"augment": "yes"}, "'augment' parameter", ("augment",)),
])
def test_bad_values_name_their_parameters(cls: type[O.MethodOptions], values: dict,
                                          pattern: str, names: tuple[str, ...]) -> None:
    with pytest.raises(InputError, match=pattern) as info:
        cls(**values)
    assert info.value.params == names


def test_good_values_pass() -> None:
    import numpy as np

    from deepgmm.data.augment import AugmentConfig

    O.FitOptions(device=torch.device("cpu"), seed=np.int64(3), lam=np.float32(0.5),
                 clip_norm=None, concurrent=None)
    O.FitOptions(device="CUDA:1")
    O.TrainOptions(augment=AugmentConfig())
    O.EMGMMOptions(seed=None, tol=None)
    O.PredictOptions(precision=None, refine_lam=0.0)
    assert dataclasses.replace(O.FitOptions(), lam=1.0).lam == 1.0


def test_the_run_configuration_records_the_training_options() -> None:
    """Every training option is in RunConfig as it is (RUN_SETTINGS) or transformed
    (augment's settings, the network's configuration); nothing else shares a name."""
    from deepgmm.fit.checkpoint import RunConfig

    config_fields = {f.name for f in dataclasses.fields(RunConfig)}
    settings = O.TrainOptions(lam=np.float32(0.5), seed=np.int64(3)).run_settings()
    assert set(settings) == set(O.TrainOptions.RUN_SETTINGS) <= config_fields
    assert type(settings["lam"]) is float and type(settings["seed"]) is int
    transformed = {"augment": "augment", "depth": "network", "base_filters": "network",
                   "labelled_seed": "labelled_slices"}  # the drawn slices' ids
    not_recorded = {"device", "labelled_slices"}  # the resolved device; the slices' ids
    for name in O.TrainOptions.names():
        assert (name in settings or transformed.get(name) in config_fields
                or name in not_recorded), name
