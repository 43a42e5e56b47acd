"""Which completed trial export takes when it is not named by `trial=N`: a rule over the study's
Pareto front, optionally within bounds.

    pick=knee              the front's trial closest to the utopia point: each objective is min-max
                           normalised over the front (0: the front's best value, 1: its worst; an
                           objective all front trials share counts 0) and the trial at the smallest
                           Euclidean distance from (0, ..., 0) is taken: the balanced compromise
    pick=best:<objective>  the front's trial with the best value of that objective
    pick.where=<bounds>    only the trials within every bound count, before the front is taken:
                           `<objective><op><number>`, op one of <= < >= >, several joined by commas,
                           e.g. pick.where='memory_mb<=12,perplexity<60'

Ties go to the lowest trial number. Rules and bounds are checked against the study's objectives
before anything is loaded.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from autoprune.bounds import Bound, parse_bound
from autoprune.components import Direction
from autoprune.errors import ConfigError
from autoprune.pareto import pareto_front

RULES = "knee or best:<objective>"


@dataclass(frozen=True)
class PickRule:
    """`knee`, or `best` of one objective, among the trials within `bounds`."""

    kind: str  # "knee" | "best"
    objective: str | None = None
    bounds: tuple[Bound, ...] = ()

    def __str__(self) -> str:
        rule = "knee" if self.kind == "knee" else f"best:{self.objective}"
        return rule + (f" where {','.join(map(str, self.bounds))}" if self.bounds else "")


def _known(objective: str, objectives: Sequence[str], where: str) -> str:
    if objective not in objectives:
        raise ConfigError(
            f"{where} names {objective!r}, not an objective of the study; its objectives: {', '.join(objectives)}"
        )
    return objective


def parse_bounds(text: str, objectives: Sequence[str]) -> tuple[Bound, ...]:
    """`pick.where`'s bounds, each naming an objective of the study and a finite number."""
    bounds = []
    for part in text.split(","):
        bound = parse_bound(part)
        if bound is None:
            raise ConfigError(
                f"pick.where={text}: {part.strip()!r} is not a bound; write <objective><op><number> with op one "
                "of <= < >= >, several joined by commas, e.g. pick.where='memory_mb<=12'"
            )
        _known(bound.name, objectives, f"pick.where={text}")
        bounds.append(bound)
    return tuple(bounds)


def parse_pick(rule: str, where: str | None, objectives: Sequence[str]) -> PickRule:
    """`pick=` and `pick.where=` checked against the study's objectives."""
    bounds = parse_bounds(where, objectives) if where is not None else ()
    if rule == "knee":
        return PickRule("knee", None, bounds)
    kind, _, objective = rule.partition(":")
    if kind != "best" or not objective:
        raise ConfigError(f"pick={rule} is not a rule; use pick={RULES} (objectives: {', '.join(objectives)})")
    return PickRule("best", _known(objective, objectives, f"pick={rule}"), bounds)


def knee(points: Mapping[int, Sequence[float]], directions: Sequence[Direction]) -> int:
    """The point closest to the utopia point once each objective is min-max normalised over `points`."""
    signs = [1.0 if d == "minimize" else -1.0 for d in directions]
    oriented = {n: [s * v for s, v in zip(signs, values)] for n, values in points.items()}  # lower is better
    lows = [min(column) for column in zip(*oriented.values())]
    spans = [max(column) - low for column, low in zip(zip(*oriented.values()), lows)]

    def distance(values: Sequence[float]) -> float:
        return math.hypot(*((v - low) / span if span else 0.0 for v, low, span in zip(values, lows, spans)))

    return min(sorted(oriented), key=lambda n: distance(oriented[n]))


def pick_trial(
    rule: PickRule, complete: Mapping[int, Sequence[float]], objectives: Sequence[str], directions: Sequence[Direction]
) -> int:
    """The number of the trial `rule` chooses among the `complete` trials (values by objective order)."""
    if not complete:
        raise ConfigError(f"pick={rule}: the study has no completed trial yet; run it first")
    column = {name: index for index, name in enumerate(objectives)}
    within = {n: v for n, v in complete.items() if all(b.holds(v[column[b.name]]) for b in rule.bounds)}
    if not within:
        ranges = "; ".join(
            f"{b.name} ranges from {min(v[column[b.name]] for v in complete.values()):.4g} to "
            f"{max(v[column[b.name]] for v in complete.values()):.4g}"
            for b in rule.bounds
        )
        raise ConfigError(f"pick.where: no complete trial is within {','.join(map(str, rule.bounds))} ({ranges})")
    front = {n: within[n] for n in pareto_front(within, directions)}
    if rule.kind == "knee":
        return knee(front, directions)
    index = column[rule.objective]
    sign = 1.0 if directions[index] == "minimize" else -1.0
    return min(sorted(front), key=lambda n: sign * front[n][index])
