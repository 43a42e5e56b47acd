"""Multi-fidelity trials: stop a trial at a cheap stage when it is clearly dominated there.

A scorer may measure in stages (`Scorer.score_in_stages`: the perplexity scorer's are the KL
divergence from the dense model on a few calibration tokens, then the perplexity of a quarter and
of half the evaluation windows, then all of them). Scorers with one stage run first, so the
trial's other objectives (size, memory, latency) are known in full when a staged one starts.
After each stage but the last the gate compares the trial with the study's completed trials:

    a completed trial *dominates* it at a stage when, at that stage, its partial values are no
    worse than this trial's, its full values of the objectives already measured are no worse
    than this trial's, and it is strictly better in at least one of them;

    the trial stops when at least `DOMINATORS` completed trials dominate it.

A stopped trial is recorded as PRUNED (Optuna's state; its run is tagged so in MLflow), is never
on the front and does not count towards `search.n_trials`; its stage values are kept like a
completed trial's, so later trials are compared at the same stages. Requiring several dominators
keeps one lucky trial from stopping the rest, and comparing only what is measured keeps a trial
that is worse in quality but better in size from being stopped. `search.fidelity=false` measures
every trial in full (and skips the stages' own cost).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from autoprune.components import Direction

DOMINATORS = 3
STAGES_ATTR = "autoprune.stages"  # per trial: {"<scorer>/<stage>": {objective: partial value}}


@dataclass(frozen=True)
class Measured:
    """A completed trial as the gate sees it."""

    values: Mapping[str, float]  # objective -> full value
    stages: Mapping[str, Mapping[str, float]]  # "<scorer>/<stage>" -> {objective: partial value}


class TrialStopped(Exception):
    """The trial was dominated at a cheap stage; not an error: the study records it as PRUNED."""

    def __init__(self, stage: str, dominators: int, stages: Mapping[str, Mapping[str, float]]):
        super().__init__(f"dominated by {dominators} completed trials at stage {stage}")
        self.stage, self.dominators, self.stages = stage, dominators, dict(stages)


def _no_worse(a: float, b: float, direction: Direction) -> bool:
    return a <= b if direction == "minimize" else a >= b


class Gate:
    """Decides after each cheap stage whether the trial goes on (see the module's rule)."""

    def __init__(
        self, directions: Mapping[str, Direction], completed: Sequence[Measured], dominators: int = DOMINATORS
    ):
        self.directions, self.completed, self.dominators = directions, completed, dominators

    def dominators_of(self, stage: str, partial: Mapping[str, float], measured: Mapping[str, float]) -> int:
        """How many completed trials dominate a trial with these `partial` values at `stage` and
        these full values of the objectives `measured` so far."""
        count = 0
        for other in self.completed:
            theirs = other.stages.get(stage)
            if theirs is None or any(name not in theirs for name in partial):
                continue
            pairs = [(theirs[name], value, self.directions[name]) for name, value in partial.items()]
            pairs += [(other.values[name], value, self.directions[name]) for name, value in measured.items()]
            if all(_no_worse(a, b, d) for a, b, d in pairs) and any(a != b for a, b, _ in pairs):
                count += 1
        return count

    def check(self, stage: str, partial: Mapping[str, float], measured: Mapping[str, float], stages) -> None:
        """Raise `TrialStopped` when enough completed trials dominate the trial at `stage`."""
        count = self.dominators_of(stage, partial, measured)
        if count >= self.dominators:
            raise TrialStopped(stage, count, stages)
