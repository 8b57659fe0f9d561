"""Parameter constraints: one table per method, checked the way scikit-learn checks estimators.

A constraint table maps every parameter name to a list of scikit-learn constraints
(:class:`~sklearn.utils._param_validation.Interval`, ``StrOptions``, a type, ``None``, ...):
a value is valid when it satisfies any of them. The same tables serve the Python API, the
command line (which maps parameter names to its flags) and stored run configurations, so a
rule is written once. scikit-learn's checker already rejects NaN and infinite values for
bounded real intervals and names the parameter and the caller in its message; this module
adds what it leaves out: unknown names are refused rather than skipped, and booleans are
not accepted where an integer is expected.

Example:
    >>> from numbers import Real
    >>> TABLE = {"tol": [Interval(Real, 0, None, closed="left")]}
    >>> check_params(TABLE, {"tol": 1e-3}, caller="fit_slices")
"""

from __future__ import annotations

from collections.abc import Mapping
from numbers import Integral, Real
from typing import Any

from sklearn.utils._param_validation import (
    Interval,
    InvalidParameterError,
    Options,
    StrOptions,
    validate_parameter_constraints,
)

from deepgmm.errors import InputError

__all__ = ["SEED", "SEED_MAX", "Constraints", "Integral", "Interval", "Options", "Real",
           "StrOptions", "check_params", "check_known", "check_seed"]

Constraints = Mapping[str, list[Any]]

SEED_MAX = 2**63
"""Seeds are integers in ``[0, SEED_MAX)`` (what every command and estimator accepts)."""
SEED = Interval(Integral, 0, SEED_MAX, closed="left")
"""A seed: a non-negative integer below 2**63."""


def check_known(constraints: Constraints, names: Any, *, caller: str) -> None:
    """Raise :class:`InputError` naming every name of ``names`` that ``constraints`` lacks."""
    unknown = sorted(set(names) - set(constraints))
    if unknown:
        plural = "s" if len(unknown) > 1 else ""
        raise InputError(f"{caller}: unknown or inapplicable option{plural} "
                         f"{', '.join(map(repr, unknown))}; it takes "
                         f"{', '.join(sorted(constraints))}",
                         params=(*unknown, *sorted(constraints)))


def _integer_only(constraints: list[Any]) -> bool:
    return any(isinstance(c, Interval) and c.type is Integral for c in constraints) and not any(
        c is bool or (isinstance(c, str) and c == "boolean") for c in constraints)


def check_params(constraints: Constraints, params: Mapping[str, Any], *, caller: str) -> None:
    """Validate ``params`` against ``constraints``; raise :class:`InputError` on the first bad one.

    Args:
        constraints: parameter name -> list of scikit-learn constraints.
        params: the values to check (a subset of the table's names).
        caller: who takes them (a function or class name), for the message.

    Raises:
        InputError: an unknown name, or a value that satisfies none of its constraints. The
            message names the parameter, what was expected and what was given; the error's
            ``params`` holds the parameter's name.
    """
    check_known(constraints, params, caller=caller)
    for name, value in params.items():
        if isinstance(value, bool) and _integer_only(constraints[name]):
            raise InputError(f"The {name!r} parameter of {caller} must be an int, "
                             f"got {value!r}", params=(name,))
    for name, value in params.items():  # one at a time, to know which one failed
        try:
            validate_parameter_constraints({name: constraints[name]}, {name: value},
                                           caller_name=caller)
        except InvalidParameterError as err:
            raise InputError(str(err), params=(name,)) from err


def check_seed(seed: Any, *, caller: str, name: str = "seed") -> None:
    """The one seed rule: an integer in ``[0, 2**63)``.

    Raises:
        InputError: naming ``name`` (the command line prints its flag, ``--seed``).
    """
    check_params({name: [SEED]}, {name: seed}, caller=caller)
