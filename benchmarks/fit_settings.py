"""Named settings of per-slice fitting for the benchmarks (``--settings`` of fit_quality.py
and fit_speed.py).

A setting is ``default`` (today's ``fit_slices`` defaults) or comma-separated
``key=value`` pairs of :func:`deepgmm.fit.single.fit_slices` keywords, the network's
``base_filters`` / ``depth``, and ``init=RUN`` (a warm start from a ``train`` run,
:mod:`deepgmm.fit.warm`), e.g.

    default  stop=labels  base_filters=16  stop=labels,base_filters=16
    lr=3e-4,lr_warmup=5,lr_half_life=20  channels_last=true  init=RUN,max_iter=10,lam=1
"""

from __future__ import annotations

from typing import Any

NET_KEYS = ("base_filters", "depth")
FIT_KEYS = ("lam", "tol", "min_iter", "max_iter", "lr", "weight_decay", "stop", "label_tol",
            "label_window", "lr_warmup", "lr_half_life", "channels_last", "precision",
            "mechanism")


def _value(text: str) -> Any:
    """``"16"`` -> 16, ``"3e-4"`` -> 0.0003, ``"true"`` -> True, else the text."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_setting(spec: str) -> dict[str, Any]:
    """``"stop=labels,base_filters=16"`` -> ``{"stop": "labels", "base_filters": 16}``;
    ``"default"`` -> ``{}``.

    Raises:
        SystemExit: an unknown key or a pair without ``=``.
    """
    if spec == "default":
        return {}
    out: dict[str, Any] = {}
    for pair in spec.split(","):
        key, sep, value = pair.partition("=")
        if not sep or key not in (*NET_KEYS, *FIT_KEYS, "init"):
            raise SystemExit(f"error: --settings {spec!r}: expected key=value pairs with keys "
                             f"from {', '.join((*NET_KEYS, *FIT_KEYS, 'init'))}")
        out[key] = value if key == "init" else _value(value)
    return out


def fit_arguments(setting: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """``fit_slices`` keywords: ``base`` (the benchmark's own options, ``net_config``
    included) overridden by ``setting`` (without ``init``, which the caller loads)."""
    args = dict(base)
    net = dict(args.pop("net_config", {}))
    for key, value in setting.items():
        if key in NET_KEYS:
            net[key] = value
        elif key != "init":
            args[key] = value
    args["net_config"] = net
    return args
