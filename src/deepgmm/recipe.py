"""Recipes: named sets of defaults, so that the published method stays one option away.

``deepgmm`` (the default) adds what the cross-validated study in ``docs/cv_levers.md``
found to help on top of the published method; ``published`` is the method of Schwab, Mayr
& Haltmeier (2024) as published, for reproducing the paper. A recipe only fills the options
a user did not give: ``--recipe published --anatomy lv`` is the published fit with the
anatomy rule.

========================  =====================  ==========================
option                    ``deepgmm``            ``published``
========================  =====================  ==========================
``anatomy`` (label maps)  ``lv-dice``            ``none`` (argmax)
``fusion``                ``labelled``           ``none`` (as fitted)
``normalisation``         ``roi``                ``crop``
(``train``)
========================  =====================  ==========================

``anatomy`` (:mod:`deepgmm.anatomy`) applies to every command that writes label maps
(``segment``, ``em``, ``fit``, ``predict``, and ``evaluate`` when it re-matches);
``fusion`` (:mod:`deepgmm.mixture.fusion`) to the probabilities of trained networks
(``predict``) and, with a μ_data file from ``deepgmm mu-data``, of ``em``, ``fit`` and
``segment``; ``normalisation`` to the slices ``train`` learns from (z-scored over the ROI
or over the crop; ``predict`` follows the run), unless ``--mu-data`` names a file, whose
normalisation it then takes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from deepgmm.errors import InputError

__all__ = ["RECIPES", "Recipe", "get_recipe", "resolve_anatomy", "resolve_fusion",
           "resolve_normalisation"]


@dataclass(frozen=True)
class Recipe:
    """The defaults one recipe sets."""

    name: str
    anatomy: str
    fusion: str
    normalisation: str


RECIPES: dict[str, Recipe] = {
    "deepgmm": Recipe(name="deepgmm", anatomy="lv-dice", fusion="labelled", normalisation="roi"),
    "published": Recipe(name="published", anatomy="none", fusion="none",
                        normalisation="crop"),
}


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name``; an unknown one is an :class:`InputError`."""
    if name not in RECIPES:
        raise InputError(f"recipe must be one of {', '.join(RECIPES)}, got {name!r}",
                         params=("recipe",))
    return RECIPES[name]


def resolve_anatomy(recipe: str, anatomy: str | None) -> str:
    """The anatomy rule to use: ``anatomy`` when given, else the recipe's."""
    from deepgmm.anatomy import ANATOMY_RULES

    rule = get_recipe(recipe).anatomy if anatomy is None else anatomy
    if rule not in ANATOMY_RULES:
        raise InputError(f"anatomy must be one of {', '.join(ANATOMY_RULES)}, got {rule!r}",
                         params=("anatomy",))
    return rule


def resolve_fusion(recipe: str, fusion: str | None) -> str:
    """The fusion of a trained network's probabilities: ``fusion`` when given, else the
    recipe's."""
    from deepgmm.mixture.fusion import FUSIONS

    value = get_recipe(recipe).fusion if fusion is None else fusion
    if value not in FUSIONS:
        raise InputError(f"fusion must be one of {', '.join(FUSIONS)}, got {value!r}",
                         params=("fusion",))
    return value


def resolve_normalisation(recipe: str, normalisation: str | None,
                          mu_file: str | os.PathLike[str] | None = None,
                          stored: str | None = None) -> str:
    """The normalisation of ``train``'s slices: ``normalisation`` when given, else the one
    a resumed run stored (``stored``), else the μ_data file's (so its means fit the
    slices), else the recipe's."""
    import json

    from deepgmm.data.slices import NORMALISATIONS

    value = normalisation or stored
    if value is None and mu_file is not None:
        try:
            value = json.loads(Path(mu_file).read_text()).get("normalisation")
        except (OSError, ValueError, AttributeError):
            value = None  # load_mu_data reports an unreadable file
    value = value or get_recipe(recipe).normalisation
    if value not in NORMALISATIONS:
        raise InputError(f"normalisation must be one of {', '.join(NORMALISATIONS)}, got "
                         f"{value!r}", params=("normalisation",))
    return str(value)
