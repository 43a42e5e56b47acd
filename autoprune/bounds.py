"""`name op number` bounds on a trial's figures, as `pick.where` and `constraints` write them.

    memory_mb<=12    latency_ms < 4    accuracy >= 0.4    latency.decode_ratio<=0.8

op is one of <= < >= >; the name is an objective or another figure a trial logs. Parsing only
checks the form and the number; each user says which names it accepts.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
}
FORM = "<name><op><number> with op one of <= < >= >"
_BOUND = re.compile(r"\s*(?P<name>[A-Za-z_][\w.]*)\s*(?P<op><=|>=|<|>)\s*(?P<limit>\S+)\s*")


@dataclass(frozen=True)
class Bound:
    """`name op limit`, e.g. memory_mb <= 12."""

    name: str
    op: str
    limit: float

    def holds(self, value: float) -> bool:
        return OPERATORS[self.op](value, self.limit)

    def violation(self, value: float) -> float:
        """0 when the bound holds, else how far the value is from holding it (> 0; a strict bound
        missed by equality counts a tiny amount), the form Optuna's constraints take."""
        if self.holds(value):
            return 0.0
        return max(abs(value - self.limit), math.ulp(self.limit) or math.ulp(1.0))

    def __str__(self) -> str:
        return f"{self.name}{self.op}{self.limit:g}"


def parse_bound(text: str) -> Bound | None:
    """The bound `text` writes, or None when it is not one (no operator, no finite number)."""
    match = _BOUND.fullmatch(text)
    if match is None:
        return None
    try:
        limit = float(match["limit"])
    except ValueError:
        return None
    return Bound(match["name"], match["op"], limit) if math.isfinite(limit) else None
