"""The options of every method: one typed dataclass each, one constraint table each.

A method's options are declared once, here, as the fields (with their defaults) of a frozen
dataclass, and constrained once, by the class's ``CONSTRAINTS`` table (scikit-learn's
format, checked by :func:`deepgmm.params.check_params`):

- :class:`EMGMMOptions` (``em-gmm``) and :class:`EMSVGMMOptions` (``em-svgmm``):
  :func:`deepgmm.mixture.em.em_segment`;
- :class:`FitOptions` (``deepg``, ``deepsvg`` per slice): :func:`deepgmm.fit.single.fit_slices`;
- :class:`TrainOptions` (one network for many slices): :func:`deepgmm.fit.train.train_network`;
- :class:`PredictOptions` (a trained network): :func:`deepgmm.fit.predict.predict`.

Every user of an option goes through these classes: the pipeline (``segment_dataset(...,
**options)`` becomes :func:`method_options`), the command line (each command builds the
dataclass from its flags), the methods themselves (the argument check at the top of
``fit_slices``, ``train_network`` and ``predict`` is ``<Class>.check``) and the stored
run configuration of ``train`` (made from :class:`TrainOptions`). An option that a model
does not take is refused with a message naming it; nothing is dropped on the way.

Options hold hyperparameters only. Arrays (``mu_data``, EM's ``weights_init`` /
``covariances_init``, a network's ``init_state``) are data and are passed beside the options;
so are the switches of a run (``progress``, train's ``run_dir`` / ``resume``).

Example:
    >>> opts = method_options("em-svgmm", {"smoothing": 4.0, "covariance": "full"},
    ...                       caller="segment_dataset")
    >>> opts.max_iter
    100
    >>> method_options("em-gmm", {"lam": 1.0}, caller="segment_dataset")
    Traceback (most recent call last):
    ...
    deepgmm.errors.InputError: option 'lam' does not apply to model 'em-gmm' ...
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch

from deepgmm.data.augment import AugmentConfig
from deepgmm.errors import InputError
from deepgmm.mixture.em import EM_MODELS, GaussianMixtureEM, SpatiallyVariantEM
from deepgmm.mixture.likelihood import DEFAULT_VAR_FLOOR
from deepgmm.mixture.prior import PRIORS
from deepgmm.nets.context import CONTEXTS
from deepgmm.params import (
    SEED,
    Constraints,
    Integral,
    Interval,
    Options,
    Real,
    StrOptions,
    check_params,
)

__all__ = ["EM_MODELS", "DEEP_MODELS", "MODELS", "NORMALISATIONS", "EMGMMOptions",
           "EMSVGMMOptions", "FitOptions", "MethodOptions", "PredictOptions", "TrainOptions",
           "method_options", "options_class"]

DEEP_MODELS: tuple[str, ...] = ("deepg", "deepsvg")
MODELS: tuple[str, ...] = (*EM_MODELS, *DEEP_MODELS)
NORMALISATIONS: tuple[str, ...] = ("crop", "roi")
# Allowed values of options that the fitting modules check too (deepgmm.fit.* imports this
# module, so these cannot be imported from there; a test keeps both equal).
PRECISIONS: tuple[str, ...] = ("fp32", "bf16")
MECHANISMS: tuple[str, ...] = ("auto", "loop", "vmap", "threads")
PENALTIES: tuple[str, ...] = ("batch", "slice")
STOPPING_RULES: tuple[str, ...] = ("published", "labels")
"""Per-slice stopping rules: ``published`` (``|ΔNLL| < tol``), ``labels`` (the label map has
nearly stopped changing; :class:`deepgmm.fit.scheduler.StoppingRule`)."""


class DeviceName(Options):
    """``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:<index>"`` (any case) or a ``torch.device``.

    (An ``Options`` subclass because scikit-learn's checker accepts only its own constraint
    classes.)
    """

    def __init__(self) -> None:
        super().__init__(str, {"auto", "cpu", "cuda"})

    def is_satisfied_by(self, val: Any) -> bool:
        if isinstance(val, torch.device):
            return True
        return isinstance(val, str) and re.fullmatch(r"auto|cpu|cuda(:\d+)?", val,
                                                     re.IGNORECASE) is not None

    def __str__(self) -> str:
        return "'auto', 'cpu', 'cuda', 'cuda:<index>' or a torch.device"


def _one_of(values: tuple[str, ...]) -> StrOptions:
    """``StrOptions`` that lists ``values`` in their order in messages."""
    return StrOptions(dict.fromkeys(values).keys())  # a set-like view that keeps the order


def _at_least(low: float, kind: type = Integral) -> Interval:
    return Interval(kind, low, None, closed="left")


def _positive() -> Interval:
    return Interval(Real, 0, None, closed="neither")


DEVICE = DeviceName()


@dataclass(frozen=True, kw_only=True)
class MethodOptions:
    """Base of the options classes: validated against ``CONSTRAINTS`` when constructed."""

    CONSTRAINTS: ClassVar[Constraints] = {}

    def __post_init__(self) -> None:
        self.check(self.as_dict(), caller=type(self).__name__)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The option names, in declaration order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def check(cls, params: Mapping[str, Any], *, caller: str) -> None:
        """Validate ``params`` (any subset of the options) for ``caller``.

        Raises:
            InputError: an unknown name, a value outside its constraints, or options that
                contradict each other (e.g. ``min_iter > max_iter``); the message names them.
        """
        check_params(cls.CONSTRAINTS, params, caller=caller)
        cls._check_relations(params, caller)

    @classmethod
    def _check_relations(cls, params: Mapping[str, Any], caller: str) -> None:
        """Rules between options; each applies when all its options are in ``params``."""

    @classmethod
    def create(cls, caller: str, **values: Any) -> MethodOptions:
        """The options ``values`` (others at their defaults), checked for ``caller``."""
        cls.check(values, caller=caller)
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        """Option name -> value (a shallow copy)."""
        return {name: getattr(self, name) for name in self.names()}

    def replace(self, **changes: Any) -> MethodOptions:
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)


def _not_above(params: Mapping[str, Any], low: str, high: str) -> None:
    if low in params and high in params and params[low] > params[high]:
        raise InputError(f"{low} ({params[low]}) must not exceed {high} ({params[high]}): "
                         f"lower {low} or raise {high}", params=(low, high))


# ----------------------------------------------------------------------------------- EM
_EM_DATA = ("mu_data", "weights_init", "covariances_init")
"""Estimator parameters that are arrays (data, passed beside the options)."""


def _em_constraints(estimator: type, model: str) -> dict[str, list[Any]]:
    """The estimator's own ``_parameter_constraints`` without its array parameters, plus
    ``model``; ``device`` as the options take it (``"auto"`` included, resolved by
    :func:`deepgmm.pipeline.run_method` before it reaches the estimator)."""
    table = {name: rule for name, rule in estimator._parameter_constraints.items()
             if name not in _EM_DATA}
    return {"model": [_one_of((model,))], **table, "device": [DEVICE]}


@dataclass(frozen=True, kw_only=True)
class EMGMMOptions(MethodOptions):
    """EM for a Gaussian mixture per slice (:class:`deepgmm.mixture.em.GaussianMixtureEM`).

    Attributes:
        model: ``"em-gmm"``.
        n_components: K (writing label maps needs the 4 MyoPS classes).
        covariance: ``"diag"`` or ``"full"``.
        init: ``"random"``, ``"kmeans"`` or ``"mu_data"``.
        tol: stopping tolerance on the mean log-likelihood; ``None``: 2e-4 (EM-GMM) or
            1e-3 (EM-SVGMM), the published settings.
        max_iter: most EM iterations.
        var_floor: added to every variance (scikit-learn's ``reg_covar``).
        seed: seed of the initialisation; ``None``: fresh entropy.
        device: ``"auto"``, ``"cpu"``, ``"cuda[:i]"`` or a ``torch.device``.
        n_kmeans_init: k-means restarts for ``init="kmeans"``.
    """

    CONSTRAINTS: ClassVar[Constraints] = _em_constraints(GaussianMixtureEM, "em-gmm")

    model: Literal["em-gmm", "em-svgmm"] = "em-gmm"
    n_components: int = 4
    covariance: Literal["diag", "full"] = "diag"
    init: Literal["random", "kmeans", "mu_data"] = "random"
    tol: float | None = None
    max_iter: int = 100
    var_floor: float = DEFAULT_VAR_FLOOR
    seed: int | None = 33
    device: str | torch.device = "auto"
    n_kmeans_init: int = 4

    def estimator_params(self) -> dict[str, Any]:
        """Keyword arguments of the estimator (everything but ``model``)."""
        params = self.as_dict()
        del params["model"]
        return params


@dataclass(frozen=True, kw_only=True)
class EMSVGMMOptions(EMGMMOptions):
    """EM for the spatially variant mixture (:class:`deepgmm.mixture.em.SpatiallyVariantEM`).

    Attributes:
        model: ``"em-svgmm"``.
        gmm_tol, gmm_max_iter: ``tol`` and ``max_iter`` of the initialising GMM fit.
        smoothing: σ in pixels of a Gaussian smoothing of the per-pixel weights after each
            E-step (0: the published algorithm).
        (others): as :class:`EMGMMOptions`.
    """

    CONSTRAINTS: ClassVar[Constraints] = _em_constraints(SpatiallyVariantEM, "em-svgmm")

    model: Literal["em-gmm", "em-svgmm"] = "em-svgmm"
    gmm_tol: float = 2e-4
    gmm_max_iter: int = 100
    smoothing: float = 0.0


# ------------------------------------------------------------------------- deep models
_NET_CONSTRAINTS: dict[str, list[Any]] = {
    "n_classes": [_at_least(1)],
    "depth": [_at_least(1)],
    "base_filters": [_at_least(1)],
}


@dataclass(frozen=True, kw_only=True)
class FitOptions(MethodOptions):
    """deepG / deepSVG fitted per slice (:func:`deepgmm.fit.single.fit_slices`).

    Attributes:
        model: ``"deepg"`` or ``"deepsvg"``.
        lam: weight of the μ_data penalty (0: off; > 0 needs μ_data).
        tol: a slice stops when ``|ΔNLL| < tol`` ...
        min_iter: ... after more than ``min_iter`` iterations;
        max_iter: most iterations per slice.
        lr, weight_decay: AdamW settings.
        clip_norm: gradient-norm clipping per slice (``None``: off).
        seed: with the case id and slice index, seeds each slice's network.
        device: ``"auto"``, ``"cpu"``, ``"cuda[:i]"`` or a ``torch.device``.
        concurrent: most slices fitted at the same time (``None``: per device type).
        n_classes, depth, base_filters: the U-Net (K, down-sampling steps, channels of the
            first level).
        mechanism: how the networks run together (``"auto"``, ``"loop"``, ``"vmap"``,
            ``"threads"``).
        precision: ``"fp32"`` or ``"bf16"`` (the networks' convolutions).
        stop: ``"published"`` (``|ΔNLL| < tol``) or ``"labels"`` (fewer than a fraction
            ``label_tol`` of the ROI pixels changed class over the last ``label_window``
            iterations).
        lr_warmup, lr_half_life: learning-rate schedule per slice: linear warm-up over
            ``lr_warmup`` steps, then halving every ``lr_half_life`` steps (0: off).
        channels_last: run the networks on channels-last (NHWC) tensors.
    """

    CONSTRAINTS: ClassVar[Constraints] = {
        "model": [_one_of(DEEP_MODELS)],
        "lam": [Interval(Real, 0, None, closed="left")],
        "tol": [_positive()],
        "min_iter": [_at_least(0)],
        "max_iter": [_at_least(1)],
        "lr": [_positive()],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "clip_norm": [_positive(), None],
        "seed": [SEED],
        "device": [DEVICE],
        "concurrent": [_at_least(1), None],
        **_NET_CONSTRAINTS,
        "mechanism": [_one_of(MECHANISMS)],
        "precision": [_one_of(PRECISIONS)],
        "stop": [_one_of(STOPPING_RULES)],
        "label_tol": [Interval(Real, 0, 1, closed="right")],
        "label_window": [_at_least(1)],
        "lr_warmup": [_at_least(0)],
        "lr_half_life": [Interval(Real, 0, None, closed="left")],
        "channels_last": ["boolean"],
    }

    model: Literal["deepg", "deepsvg"] = "deepg"
    lam: float = 0.0
    tol: float = 1e-3
    min_iter: int = 10
    max_iter: int = 200
    lr: float = 1e-4
    weight_decay: float = 1e-3
    clip_norm: float | None = 12.0
    seed: int = 0
    device: str | torch.device = "auto"
    concurrent: int | None = None
    n_classes: int = 4
    depth: int = 4
    base_filters: int = 32
    mechanism: Literal["auto", "loop", "vmap", "threads"] = "auto"
    precision: Literal["fp32", "bf16"] = "fp32"
    stop: Literal["published", "labels"] = "published"
    label_tol: float = 1e-3
    label_window: int = 5
    lr_warmup: int = 0
    lr_half_life: float = 0.0
    channels_last: bool = False

    @classmethod
    def _check_relations(cls, params: Mapping[str, Any], caller: str) -> None:
        _not_above(params, "min_iter", "max_iter")

    def fit_params(self) -> dict[str, Any]:
        """Keyword arguments of :func:`~deepgmm.fit.single.fit_slices` (the network options
        as its ``net_config``)."""
        params = self.as_dict()
        params["net_config"] = {name: params.pop(name) for name in _NET_CONSTRAINTS}
        return params


@dataclass(frozen=True, kw_only=True)
class TrainOptions(MethodOptions):
    """One network trained on many slices (:func:`deepgmm.fit.train.train_network`).

    Attributes:
        model: ``"deepg"`` or ``"deepsvg"``.
        lam: weight of the μ_data penalty.
        epochs: most epochs (and the horizon of the learning-rate decay).
        min_epochs: epochs before the stopping rule applies.
        batch_size: slices per optimiser step.
        lr: initial AdamW learning rate; weight_decay: AdamW weight decay.
        tol: stop when the epoch-mean NLL changes by less.
        seed: seeds the weights, the slice order and the augmentation.
        device: ``"auto"``, ``"cpu"``, ``"cuda[:i]"`` or a ``torch.device``.
        augment: the published augmentation (``True``), none (``False``) or an
            :class:`~deepgmm.data.augment.AugmentConfig`.
        n_classes, depth, base_filters: the U-Net.
        penalty: ``"batch"`` (published) or ``"slice"``.
        clip_norm: gradient-norm clipping (``None``: off).
        label_weight: weight of the cross-entropy on the labelled slices (0: none).
        labelled_slices: how many slices carry their labels when ``label_weight > 0``.
        precision: ``"fp32"`` or ``"bf16"``.
        context: extra network input channels from the ROI (:mod:`deepgmm.nets.context`):
            ``"none"`` (published), ``"distance"`` or ``"distance+radius"``.
        potts_weight: weight of the soft Potts energy of the responsibilities in the loss
            (:mod:`deepgmm.fit.potts`; 0: none).
        consistency_weight: weight of the Π-model consistency term
            (:mod:`deepgmm.fit.consistency`; 0: none).
        labelled_seed: seed of the draw of the labelled slices (cross-entropy, class prior).
        prior: ``"means"`` (published: the μ_data penalty only) or ``"all"`` (also the
            variances and weights, :mod:`deepgmm.mixture.prior`).
        lam_var, lam_weights: weights of the log-variance and weight penalties
            (``prior="all"``).
        components_per_class: Gaussian components per class (1: published).
    """

    CONSTRAINTS: ClassVar[Constraints] = {
        "model": [_one_of(DEEP_MODELS)],
        "lam": [Interval(Real, 0, None, closed="left")],
        "epochs": [_at_least(1)],
        "min_epochs": [_at_least(1)],
        "batch_size": [_at_least(1)],
        "lr": [_positive()],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "seed": [SEED],
        "device": [DEVICE],
        "augment": ["boolean", AugmentConfig],
        **_NET_CONSTRAINTS,
        "penalty": [_one_of(PENALTIES)],
        "clip_norm": [_positive(), None],
        "label_weight": [Interval(Real, 0, None, closed="left")],
        "labelled_slices": [_at_least(1)],
        "precision": [_one_of(PRECISIONS)],
        "context": [_one_of(CONTEXTS)],
        "potts_weight": [Interval(Real, 0, None, closed="left")],
        "consistency_weight": [Interval(Real, 0, None, closed="left")],
        "labelled_seed": [SEED],
        "prior": [_one_of(PRIORS)],
        "lam_var": [Interval(Real, 0, None, closed="left")],
        "lam_weights": [Interval(Real, 0, None, closed="left")],
        "components_per_class": [_at_least(1)],
    }

    model: Literal["deepg", "deepsvg"] = "deepg"
    lam: float = 1.0
    epochs: int = 100
    min_epochs: int = 10
    batch_size: int = 4
    lr: float = 1e-3
    weight_decay: float = 1e-3
    tol: float = 5e-3
    seed: int = 0
    device: str | torch.device = "auto"
    augment: bool | AugmentConfig = True
    n_classes: int = 4
    depth: int = 4
    base_filters: int = 32
    penalty: Literal["batch", "slice"] = "batch"
    clip_norm: float | None = 12.0
    label_weight: float = 0.0
    labelled_slices: int = 10
    precision: Literal["fp32", "bf16"] = "fp32"
    context: Literal["none", "distance", "distance+radius"] = "none"
    potts_weight: float = 0.0
    consistency_weight: float = 0.0
    labelled_seed: int = 42
    prior: Literal["means", "all"] = "means"
    lam_var: float = 1.0
    lam_weights: float = 1.0
    components_per_class: int = 1

    @classmethod
    def _check_relations(cls, params: Mapping[str, Any], caller: str) -> None:
        _not_above(params, "min_epochs", "epochs")

    RUN_SETTINGS: ClassVar[tuple[str, ...]] = (
        "model", "lam", "epochs", "min_epochs", "batch_size", "lr", "weight_decay", "tol",
        "seed", "penalty", "clip_norm", "label_weight", "precision", "n_classes", "context",
        "potts_weight", "consistency_weight", "prior", "lam_var", "lam_weights",
        "components_per_class")
    """The options a run configuration (:class:`deepgmm.fit.checkpoint.RunConfig`) records
    as they are; the others enter it transformed (``augment`` as its settings, ``depth``
    and ``base_filters`` as the network's configuration) or not at all (``device``: the
    resolved device is recorded, ``labelled_slices`` and ``labelled_seed``: which slices
    they were)."""

    def run_settings(self) -> dict[str, Any]:
        """:data:`RUN_SETTINGS` as JSON values (``float`` / ``int``), for the run
        configuration."""
        as_float = {"lam", "lr", "weight_decay", "tol", "label_weight", "potts_weight",
                    "consistency_weight",
                    "lam_var", "lam_weights"}
        as_int = {"epochs", "min_epochs", "batch_size", "seed", "n_classes",
                  "components_per_class"}
        out: dict[str, Any] = {}
        for name in self.RUN_SETTINGS:
            value = getattr(self, name)
            if value is not None and (name in as_float or name == "clip_norm"):
                value = float(value)
            elif name in as_int:
                value = int(value)
            out[name] = value
        return out


@dataclass(frozen=True, kw_only=True)
class PredictOptions(MethodOptions):
    """A trained network applied to slices (:func:`deepgmm.fit.predict.predict`).

    Attributes:
        refine: per-slice fitting iterations from the trained weights (0: none).
        refine_lr: AdamW learning rate of the refinement.
        refine_lam: μ_data penalty weight of the refinement (``None``: the training λ).
        tta: average over the crop's quarter turns and mirrors (not with ``refine``).
        chunk_size: slices per forward pass.
        device: ``"auto"``, ``"cpu"``, ``"cuda[:i]"`` or a ``torch.device``.
        precision: ``"fp32"``, ``"bf16"`` or ``None`` (the precision trained in).
        fusion: ``"labelled"`` (fuse with the run's labelled class Gaussians,
            :mod:`deepgmm.mixture.fusion`) or ``"none"`` (the network's probabilities).
    """

    CONSTRAINTS: ClassVar[Constraints] = {
        "refine": [_at_least(0)],
        "refine_lr": [_positive()],
        "refine_lam": [Interval(Real, 0, None, closed="left"), None],
        "tta": ["boolean"],
        "chunk_size": [_at_least(1)],
        "device": [DEVICE],
        "precision": [_one_of(PRECISIONS), None],
        "fusion": [_one_of(("labelled", "none"))],
    }

    refine: int = 0
    refine_lr: float = 1e-4
    refine_lam: float | None = None
    tta: bool = False
    chunk_size: int = 16
    device: str | torch.device = "auto"
    precision: Literal["fp32", "bf16"] | None = None
    fusion: Literal["labelled", "none"] = "none"

    @classmethod
    def _check_relations(cls, params: Mapping[str, Any], caller: str) -> None:
        if params.get("tta") and params.get("refine", 0) > 0:
            raise InputError("tta averages the trained network's forward passes; it cannot "
                             "be combined with refine > 0", params=("tta", "refine"))


# ------------------------------------------------------------------------ by model name
_BY_MODEL: dict[str, type[MethodOptions]] = {
    "em-gmm": EMGMMOptions, "em-svgmm": EMSVGMMOptions,
    "deepg": FitOptions, "deepsvg": FitOptions,
}


def options_class(model: str, *, caller: str,
                  models: tuple[str, ...] = MODELS) -> type[MethodOptions]:
    """The options class of ``model``, which must be one of ``models``."""
    check_params({"model": [_one_of(models)]}, {"model": model}, caller=caller)
    return _BY_MODEL[model]


def method_options(model: str, options: Mapping[str, Any] | MethodOptions | None = None, *,
                   caller: str, models: tuple[str, ...] = MODELS) -> MethodOptions:
    """The validated options of ``model`` from keyword options (or an options object).

    Args:
        model: ``"em-gmm"``, ``"em-svgmm"``, ``"deepg"`` or ``"deepsvg"``.
        options: option name -> value; options not given take the class's defaults.
        caller: who asks (a function name), for messages.
        models: the models ``caller`` takes (a family: :data:`EM_MODELS`,
            :data:`DEEP_MODELS`).

    Raises:
        InputError: an unknown model; an option the model does not take (named, with the
            model and the options it takes); a bad value.
    """
    cls = options_class(model, caller=caller, models=models)
    if isinstance(options, MethodOptions):
        if not isinstance(options, cls) or getattr(options, "model", model) != model:
            raise InputError(f"{type(options).__name__} (model "
                             f"{getattr(options, 'model', None)!r}) given for model {model!r}",
                             params=("model",))
        return options
    values = dict(options or {})
    if "model" in values:
        raise InputError(f"model is given twice ({model!r} and {values['model']!r} among the "
                         "options)", params=("model",))
    bad = sorted(set(values) - set(cls.names()))
    if bad:
        takes = [n for n in cls.names() if n != "model"]
        plural = "s" if len(bad) > 1 else ""
        verb = "do" if len(bad) > 1 else "does"
        raise InputError(f"option{plural} {', '.join(map(repr, bad))} {verb} not apply to "
                         f"model {model!r} (it takes {', '.join(takes)})",
                         params=(*bad, "model", *takes))
    values["model"] = model
    cls.check(values, caller=caller)
    return cls(**values)
