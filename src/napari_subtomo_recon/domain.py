"""The values a number or a word may take: one class for flags, job.star options, GUI
fields and STAR labels, with one message format ("must be ≥ 0 (why)").

Imports nothing but the standard library and NumPy, so that both :mod:`.params` and
:mod:`.io` use it without depending on each other.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class Domain:
    """Accepted values of one option; :meth:`problem` says what is wrong with a value.

    Numbers must be finite.  ``check`` is an extra rule (e.g. the symmetry name) that
    returns a message or None.
    """

    min: float | None = None
    max: float | None = None
    min_open: bool = False  # value > min (otherwise >=)
    max_open: bool = False  # value < max (otherwise <=)
    even: bool = False
    choices: tuple[str, ...] = ()
    check: Callable[[Any], str | None] | None = None
    why: str = ""  # appended to range messages: the reason for the bound

    def problem(self, value: object) -> str | None:
        if isinstance(value, bool) or value is None:
            return None
        if isinstance(value, int | float):
            return self._number_problem(float(value))
        if self.choices and value not in self.choices:
            return "must be one of " + ", ".join(self.choices)
        if self.check is not None:
            return self.check(value)
        return None

    def _number_problem(self, v: float) -> str | None:
        why = f" ({self.why})" if self.why else ""
        if not math.isfinite(v):
            return "must be a finite number"
        low = self.min is not None and (v <= self.min if self.min_open else v < self.min)
        high = self.max is not None and (v >= self.max if self.max_open else v > self.max)
        if low or high:
            if self.min is not None and self.max is not None:
                lo, hi = "(" if self.min_open else "[", ")" if self.max_open else "]"
                return f"must be in {lo}{number_text(self.min)}, {number_text(self.max)}{hi}{why}"
            if low:
                return f"must be {'>' if self.min_open else '≥'} {number_text(self.min)}{why}"  # type: ignore[arg-type]
            return f"must be {'<' if self.max_open else '≤'} {number_text(self.max)}{why}"  # type: ignore[arg-type]
        if self.even and int(v) % 2:
            return f"must be even{why}"
        if self.check is not None:
            return self.check(v)
        return None

    def outside(self, values: NDArray[np.float64]) -> NDArray[np.intp]:
        """Indices of the (finite) values this domain refuses, in order."""
        v = np.asarray(values, dtype=np.float64)
        bad = np.zeros(v.shape, dtype=bool)
        if self.min is not None:
            bad |= (v <= self.min) if self.min_open else (v < self.min)
        if self.max is not None:
            bad |= (v >= self.max) if self.max_open else (v > self.max)
        if self.even:  # as problem(): int() truncates
            bad |= np.mod(np.trunc(v), 2) != 0
        if self.check is not None:
            bad |= np.array([self.check(float(x)) is not None for x in v], dtype=bool)
        return np.flatnonzero(bad)


def number_text(v: float) -> str:
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else f"{v:g}"
