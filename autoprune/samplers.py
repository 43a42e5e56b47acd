"""The samplers a study can run, by name (`search.sampler`), set up for its budget and its baselines.

`tpe` (the default), `nsga2`, `nsga3`, `qmc` and `random` are Optuna's. With Optuna's defaults
the genetic ones (NSGA-II, NSGA-III) lost to random search on the prune space at 40 and 60
trials (`bench/bench_samplers.py`, README "Samplers"): their fronts rarely reached beyond the
sizes their random first generation had tried. The size of a pruned model is set by its mean
sparsity alone, and the hypervolume of a front rewards its ends most (the smallest model with a
usable perplexity); random search draws a sparsity near each end of its range every few trials,
while a genetic sampler breeds near the parents it has. What changes, and why:

- The first generation spans each parameter's range, its ends included: a Latin hypercube on
  the grid low, low + (high - low) / (p - 1), ..., high for a population of p (each value once
  per parameter, in an order drawn from the study seed; categorical choices in turn). The
  breeding that follows starts from both ends of every range.
- Crossover and mutation. Optuna's default, uniform crossover, copies each parameter from one
  of two parents, and its default mutation redraws a parameter at random, so a child's
  sparsity is mostly one an earlier trial tried, a size the front has. Simulated binary
  crossover (SBX) draws each number around and between its parents' values, and polynomial
  mutation moves it near its own, the operators NSGA-II and NSGA-III were published with;
  categorical parameters are still swapped.
- Population. About five generations fit in the budget (`population_size`), at least eight
  trials each.
- NSGA-III's reference directions. As many as the population, as the NSGA-III paper sizes them
  (`reference_divisions`), not Optuna's three divisions (four directions for two objectives).
- Baselines. Optuna breeds only the parameters every completed trial has, and QMC walks the
  space of the study's first trial; a baseline has part of the space (its allocation has no
  offsets, its compressor runs alone), so with baselines queued the per-layer parameters were
  only ever drawn at random. Here the space is that of the sampler's own trials, and a queued
  trial joins no generation and takes no point of the sequence.
"""

from __future__ import annotations

import math
import warnings
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.samplers import BaseSampler, NSGAIIISampler, NSGAIISampler, QMCSampler, RandomSampler, TPESampler
from optuna.samplers.nsgaii import PolynomialMutation, SBXCrossover
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from autoprune.config import SearchConfig
from autoprune.errors import ConfigError

GENERATIONS = 5  # generations a genetic sampler's population is sized to fit in the budget
MIN_POPULATION, MAX_POPULATION = 8, 50
QUEUED = "fixed_params"  # Optuna's system attribute of a trial queued with enqueue_trial (a baseline)


def population_size(n_trials: int) -> int:
    """About `GENERATIONS` generations within the budget, `MIN_POPULATION` to `MAX_POPULATION` each."""
    return max(MIN_POPULATION, min(MAX_POPULATION, n_trials // GENERATIONS))


def reference_divisions(population: int, n_objectives: int) -> int:
    """The fewest divisions of each objective axis whose evenly spread directions, C(p + m - 1, m - 1)
    for m objectives, are at least as many as the population."""
    divisions = 1
    while math.comb(divisions + n_objectives - 1, n_objectives - 1) < population:
        divisions += 1
    return divisions


def queued(trial: FrozenTrial) -> bool:
    """A trial queued ahead of the sampler (a baseline), not one it proposed."""
    return QUEUED in trial.system_attrs


def _own_complete(study: Study) -> list[FrozenTrial]:
    trials = study._get_trials(deepcopy=False, states=(TrialState.COMPLETE,), use_cache=True)
    return [trial for trial in trials if not queued(trial)]


def spanning_value(distribution: BaseDistribution, position: int, points: int) -> Any:
    """The `position`-th of `points` values evenly spread over a distribution's range, both ends
    included (categorical: the choices in turn)."""
    if isinstance(distribution, CategoricalDistribution):
        return distribution.choices[position % len(distribution.choices)]
    assert isinstance(distribution, (FloatDistribution, IntDistribution))
    fraction = position / (points - 1)
    low, high = float(distribution.low), float(distribution.high)
    if distribution.log:
        value = math.exp(math.log(low) + fraction * (math.log(high) - math.log(low)))
    else:
        value = low + fraction * (high - low)
    if distribution.step is not None:
        value = low + round((value - low) / distribution.step) * distribution.step
    value = min(max(value, low), high)
    return round(value) if isinstance(distribution, IntDistribution) else value


class _OwnGenerations:
    """Generations of the sampler's own trials, bred over the parameters they all have, the first
    one a Latin hypercube with the ends of every range (`spanning_value`)."""

    def __init__(self, *, design_seed: int, **settings: Any) -> None:
        super().__init__(**settings)
        self._design_seed = design_seed  # the study seed: every process reads the same design
        self._counted: tuple[int, int] = (-1, 0)  # (trial number, its place among the own trials)

    def sample_independent(self, study: Study, trial: FrozenTrial, name: str, distribution: BaseDistribution) -> Any:
        points = self.population_size  # type: ignore[attr-defined]
        index = self._place(study, trial)
        if queued(trial) or index >= points:  # later: mutations and parameters outside the bred space
            return super().sample_independent(study, trial, name, distribution)  # type: ignore[misc]
        order = np.random.RandomState((self._design_seed + zlib.crc32(name.encode())) % 2**32).permutation(points)
        return spanning_value(distribution, int(order[index]), points)

    def _place(self, study: Study, trial: FrozenTrial) -> int:
        """How many of the trials before `trial` are the sampler's own (not queued), counted once
        per trial rather than once per parameter."""
        number, place = self._counted  # read once: one tuple, whatever another thread writes
        if number != trial.number:
            earlier = study._get_trials(deepcopy=False, use_cache=True)[: trial.number]
            place = sum(not queued(other) for other in earlier)
            self._counted = (trial.number, place)
        return place

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        space: dict[str, BaseDistribution] | None = None
        for done in _own_complete(study):
            if space is None:
                space = dict(done.distributions)
            else:
                space = {name: d for name, d in space.items() if done.distributions.get(name) == d}
        return {name: d for name, d in (space or {}).items() if not d.single()}

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if queued(trial):  # a baseline that leaves a parameter to the sampler: drawn, not bred
            return {}
        return super().sample_relative(study, trial, search_space)  # type: ignore[misc]


class GeneticNSGA2(_OwnGenerations, NSGAIISampler):
    """NSGA-II with the operators, population and baselines above."""


class GeneticNSGA3(_OwnGenerations, NSGAIIISampler):
    """NSGA-III with the operators, population, reference directions and baselines above."""


class OwnSpaceQMC(QMCSampler):
    """A scrambled Sobol sequence over the space of the sampler's first own trial."""

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        own = _own_complete(study)
        if queued(trial) or not own:  # the first own trial is drawn at random, as Optuna's
            return {}
        return dict(min(own, key=lambda done: done.number).distributions)


def _genetic(search: SearchConfig) -> dict[str, Any]:
    return {
        "design_seed": search.seed,
        "population_size": search.population_size or population_size(search.n_trials),
        "crossover": SBXCrossover(),
        "mutation": PolynomialMutation(),
    }


def _nsga3(search: SearchConfig, seed: int, n_objectives: int) -> BaseSampler:
    settings = _genetic(search)
    divisions = search.reference_divisions or reference_divisions(settings["population_size"], n_objectives)
    return GeneticNSGA3(seed=seed, reference_points=search.reference_points, dividing_parameter=divisions, **settings)


SAMPLERS: dict[str, Callable[[SearchConfig, int, int], BaseSampler]] = {
    # group=True: TPE models each set of co-occurring parameters jointly, as conditional spaces need
    "tpe": lambda c, seed, _: TPESampler(seed=seed, n_startup_trials=c.n_startup_trials, multivariate=True, group=True),
    "nsga2": lambda c, seed, _: GeneticNSGA2(seed=seed, **_genetic(c)),
    "nsga3": _nsga3,
    # one sequence for the study (scrambled by the study seed), which every process walks on; the
    # parameters outside its space (conditional ones) drawn at random with the process's seed
    "qmc": lambda c, seed, _: OwnSpaceQMC(
        seed=c.seed, scramble=True, independent_sampler=RandomSampler(seed=seed), warn_independent_sampling=False
    ),
    "random": lambda c, seed, _: RandomSampler(seed=seed),
}
# settings only some samplers read: set for another sampler, they are refused
_SETTINGS_OF = {
    "population_size": ("nsga2", "nsga3"),
    "reference_points": ("nsga3",),
    "reference_divisions": ("nsga3",),
}


def build_sampler(search: SearchConfig, seed: int, n_objectives: int) -> BaseSampler:
    """The configured sampler, with the process's `seed`, for a study of `n_objectives`. In a study
    with constraints TPE, NSGA-II and NSGA-III read each trial's violations (Optuna's trial
    constraints, set when a trial is told) and prefer feasible trials as parents and models; QMC
    and random search ignore them. Optuna marks NSGA-III, multivariate TPE and the genetic
    operators experimental; we use them on purpose."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return SAMPLERS[search.sampler](search, seed, n_objectives)


def check_search(search: SearchConfig, n_objectives: int) -> None:
    """The sampler's name and the settings that need more than their own field (each field's
    range is checked by the rules of `SearchConfig`)."""
    if search.sampler not in SAMPLERS:
        raise ConfigError(f"unknown sampler {search.sampler!r}; known samplers: {', '.join(sorted(SAMPLERS))}")
    for key, samplers in _SETTINGS_OF.items():
        if getattr(search, key) is not None and search.sampler not in samplers:
            raise ConfigError(
                f"search.{key} is a setting of {' and '.join(samplers)}, not of {search.sampler}; "
                f"drop it or choose +search={samplers[-1]}"
            )
    points = search.reference_points
    if points is not None and search.reference_divisions is not None:
        raise ConfigError(
            "search.reference_points and search.reference_divisions both set; give the points or the divisions"
        )
    if points is not None and len(points[0]) != n_objectives:
        raise ConfigError(
            f"search.reference_points has {len(points[0])} numbers a point, the study {n_objectives} objectives; "
            "give one number per objective, in the order of the scorers"
        )
