"""Argument checks shared by the optimizers and lr_scheduler: each names the owner, the argument, the rule and the
value received. `fastcnn.optim` re-exports them for lr_scheduler, which imports them from there.
"""
from __future__ import annotations

import math

import numpy as np

from .._args import _describe
from .._args import check_int as _check_int  # noqa: F401 (re-exported: the optimizers and schedulers call it)


def _real(value, name: str, owner: str, rule: str) -> float:
    """A real number as a Python float (so it is JSON-able and keeps NumPy arithmetic in float32)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{owner}: {name} must be {rule}; got {_describe(value)}")
    return float(value)


def _check_float(value, name: str, owner: str, *, low: float = 0.0, high: float = math.inf,
                 low_open: bool = False, high_open: bool = True) -> float:
    """A finite float in the interval [low, high) (by default [0, inf)); the rule is spelled out in the error."""
    if low == -math.inf:
        rule = "a finite float"
    elif high == math.inf:
        rule = f"a finite float {'>' if low_open else '>='} {low:g}"
    else:
        rule = f"a float in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    number = _real(value, name, owner, rule)
    below = number <= low if low_open else number < low
    above = number >= high if high_open else number > high
    if not math.isfinite(number) or below or above:
        raise ValueError(f"{owner}: {name} must be {rule}; got {value!r}")
    return number


def _check_choice(value, name: str, owner: str, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{owner}: {name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value
