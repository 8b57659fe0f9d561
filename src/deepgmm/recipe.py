"""Recipes: named sets of defaults, so that the published method stays one option away.

``deepgmm`` (the default) adds what the cross-validated study in ``docs/cv_levers.md``
found to help on top of the published method; ``published`` is the method of Schwab, Mayr
& Haltmeier (2024) as published, for reproducing the paper. A recipe only fills the options
a user did not give: ``--recipe published --anatomy lv`` is the published fit with the
anatomy rule.

========================  =====================  ==========================
option                    ``deepgmm``            ``published``
========================  =====================  ==========================
``anatomy`` (label maps)  ``lv``                 ``none`` (argmax)
``fusion``                ``labelled``           ``none`` (as fitted)
========================  =====================  ==========================

``anatomy`` (:mod:`deepgmm.anatomy`) applies to every command that writes label maps
(``segment``, ``em``, ``fit``, ``predict``, and ``evaluate`` when it re-matches);
``fusion`` (:mod:`deepgmm.mixture.fusion`) to the probabilities of trained networks
(``predict``) and, with a μ_data file from ``deepgmm mu-data``, of ``em``, ``fit`` and
``segment``.
"""

from __future__ import annotations

from dataclasses import dataclass

from deepgmm.errors import InputError

__all__ = ["RECIPES", "Recipe", "get_recipe", "resolve_anatomy", "resolve_fusion"]


@dataclass(frozen=True)
class Recipe:
    """The defaults one recipe sets."""

    name: str
    anatomy: str
    fusion: str


RECIPES: dict[str, Recipe] = {
    "deepgmm": Recipe(name="deepgmm", anatomy="lv", fusion="labelled"),
    "published": Recipe(name="published", anatomy="none", fusion="none"),
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
