"""Constraints: bounds every trial on the reported front must respect.

    constraints: ['memory_mb <= 12', 'latency_ms <= 4', 'latency.decode_ratio < 0.9']

Each names an objective of the study or another figure its trials log (`<scorer>.<figure>` of a
selected scorer, `<compressor>.<figure>` of a compressor in the space) and is written as
`pick.where` writes bounds (`autoprune.bounds`). After a trial is measured its violation of each
constraint (0 when it holds) is stored on the Optuna trial as Optuna's own trial constraints
(`set_constraint`, keyed by the constraint's text), which the records read and the samplers that
support them (TPE, NSGA-II, NSGA-III) read to steer away from infeasible regions.
An infeasible trial stays COMPLETE (its values still teach the sampler) but is never on the
reported front, is tagged `autoprune.feasible=false` in MLflow, and `autoprune export pick=...`
never takes it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from optuna.trial import FrozenTrial

from autoprune.bounds import FORM, Bound, parse_bound
from autoprune.errors import ConfigError
from autoprune.trial import TrialError

CONSTRAINTS_ATTR = "autoprune.constraints"  # per study: the constraints it was run with


def parse_constraints(texts: Sequence[str], objectives: Sequence[str], prefixes: Sequence[str]) -> tuple[Bound, ...]:
    """The config's constraints, each naming an objective or a figure under one of `prefixes`
    (the selected scorers' and the space's compressors' names)."""
    constraints = []
    for index, text in enumerate(texts):
        bound = parse_bound(text)
        if bound is None:
            raise ConfigError(f"constraints[{index}] is {text!r}; write {FORM}, e.g. constraints=['memory_mb<=12']")
        head = bound.name.split(".", 1)[0]
        if bound.name not in objectives and not (head in prefixes and "." in bound.name):
            raise ConfigError(
                f"constraints[{index}] names {bound.name!r}, which no trial of this study measures; name an "
                f"objective ({', '.join(objectives)}) or a figure of a scorer or compressor "
                f"({', '.join(f'{prefix}.<figure>' for prefix in prefixes)})"
            )
        constraints.append(bound)
    return tuple(constraints)


def violations(constraints: Sequence[Bound], figures: Mapping[str, float]) -> list[float]:
    """Each constraint's violation by a measured trial (`figures`: its objectives and logged figures)."""
    missing = [c.name for c in constraints if c.name not in figures]
    if missing:
        logged = ", ".join(sorted(figures))
        raise TrialError(f"constraints name {missing}, which this trial did not log; it logged: {logged}")
    return [c.violation(float(figures[c.name])) for c in constraints]


def is_feasible(trial_violations: Sequence[float] | None) -> bool:
    return not trial_violations or all(v <= 0 for v in trial_violations)


def violations_of(trial: FrozenTrial) -> Sequence[float]:
    """The violations stored on the trial (none when the study has no constraints, so every trial
    is feasible)."""
    return list(trial.constraints.values())
