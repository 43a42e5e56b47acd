"""The Pareto front of a multi-objective study, backend-independent."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from autoprune.components import Direction


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[Direction]) -> bool:
    """True if `a` is no worse than `b` in every objective and better in at least one."""
    signs = [1.0 if direction == "minimize" else -1.0 for direction in directions]
    no_worse = all(s * x <= s * y for s, x, y in zip(signs, a, b))
    better = any(s * x < s * y for s, x, y in zip(signs, a, b))
    return no_worse and better


def pareto_front(points: Mapping[int, Sequence[float]], directions: Sequence[Direction]) -> list[int]:
    """Keys of the non-dominated points, in key order; duplicates of a front point stay on it."""
    return sorted(
        key
        for key, point in points.items()
        if not any(dominates(other, point, directions) for other_key, other in points.items() if other_key != key)
    )
