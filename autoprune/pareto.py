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


def reference_point(first: Sequence[float], directions: Sequence[Direction]) -> list[float]:
    """Where the hypervolume is measured from, fixed once per study from its first completed trial
    `first`: each value moved once its own distance from zero in the worse direction (2·v for a
    minimised positive value, 0 for a maximised one; ±1 from a value of 0), so every trial that is
    not at least twice as bad as the first counts, in any unit."""
    return [
        v + (abs(v) or 1.0) if direction == "minimize" else v - (abs(v) or 1.0)
        for v, direction in zip(first, directions)
    ]


def hypervolume(
    points: Sequence[Sequence[float]], reference: Sequence[float], directions: Sequence[Direction]
) -> float:
    """The volume dominated by `points` and bounded by `reference`: the larger, the better the front.

    Exact, by slicing: the points are sorted along the last objective, and each slab between two
    consecutive values adds its thickness times the hypervolume of the points below it in the
    other objectives. Points no better than the reference in some objective add nothing."""
    signs = [1.0 if direction == "minimize" else -1.0 for direction in directions]
    bound = [s * r for s, r in zip(signs, reference)]
    inside = [[s * v for s, v in zip(signs, p)] for p in points]
    return _dominated([p for p in inside if all(v < r for v, r in zip(p, bound))], bound)


def _dominated(points: list[list[float]], bound: list[float]) -> float:
    """Hypervolume of minimised `points`, all strictly better than `bound` in every objective."""
    if not points:
        return 0.0
    if len(bound) == 1:
        return bound[0] - min(p[0] for p in points)
    ordered = sorted(points, key=lambda p: p[-1])
    volume = 0.0
    for index, point in enumerate(ordered):
        top = ordered[index + 1][-1] if index + 1 < len(ordered) else bound[-1]
        if top > point[-1]:
            volume += (top - point[-1]) * _dominated([p[:-1] for p in ordered[: index + 1]], bound[:-1])
    return volume
