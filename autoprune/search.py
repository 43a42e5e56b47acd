"""The Optuna search backend: samplers by name, a resumable study, ask-and-tell trials.

The trial function (`autoprune.trial.run_trial`) knows nothing of Optuna; this module only
turns the declarative space into `suggest_*` calls and records outcomes in Optuna's storage,
so another backend (Ray Tune) can drive the same trials.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.samplers import BaseSampler, NSGAIIISampler, RandomSampler, TPESampler
from optuna.trial import FrozenTrial, TrialState

from autoprune.components import Direction
from autoprune.config import SearchConfig
from autoprune.errors import ConfigError
from autoprune.space import SearchSpace

OBJECTIVES_ATTR = "autoprune.objectives"
RUN_ID_ATTR = "mlflow_run_id"
BASELINE_ATTR = "autoprune.baseline"  # {"name": ..., "overrides": {compressor: {param: value}}}
LAYERS_ATTR = "autoprune.layers"  # the per-layer lists a trial's compressors reported, e.g. prune.ratio


def nsga3_population(n_trials: int) -> int:
    """About five generations within the budget, never fewer than 4 nor more than 50 per generation."""
    return max(4, min(50, n_trials // 5))


_SAMPLERS: dict[str, Callable[[SearchConfig], BaseSampler]] = {
    # group=True: TPE models each set of co-occurring parameters jointly, as conditional spaces need
    "tpe": lambda c: TPESampler(seed=c.seed, n_startup_trials=c.n_startup_trials, multivariate=True, group=True),
    "nsga3": lambda c: NSGAIIISampler(seed=c.seed, population_size=c.population_size or nsga3_population(c.n_trials)),
    "random": lambda c: RandomSampler(seed=c.seed),
}


def build_sampler(search: SearchConfig) -> BaseSampler:
    """The configured sampler; Optuna marks NSGA-III and multivariate TPE experimental, we use them on purpose."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return _SAMPLERS[search.sampler](search)


def check_search(search: SearchConfig) -> None:
    """The sampler's name; its numbers are checked by the rules of `SearchConfig`'s fields."""
    if search.sampler not in _SAMPLERS:
        raise ConfigError(f"unknown sampler {search.sampler!r}; known samplers: {', '.join(sorted(_SAMPLERS))}")


@dataclass
class Baseline:
    """A fixed configuration every new study evaluates before the sampler proposes anything."""

    name: str
    params: dict[str, Any]  # values of sampled parameters (flat keys), enqueued in Optuna
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # values of constants, by compressor


@dataclass
class CompletedTrial:
    number: int
    values: list[float]
    params: dict[str, Any]
    run_id: str | None
    baseline: str | None = None
    layers: dict[str, list[Any]] = field(default_factory=dict)


class OptunaSearch:
    """One Optuna study in persistent storage, created on first use and resumed afterwards."""

    def __init__(
        self,
        search: SearchConfig,
        study_name: str,
        storage: str,
        objectives: Sequence[str],
        directions: Sequence[Direction],
    ):
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.objectives = list(objectives)
        self.study = optuna.create_study(
            study_name=study_name,
            storage=storage,
            sampler=build_sampler(search),
            directions=list(directions),
            load_if_exists=True,
        )
        stored = self.study.user_attrs.get(OBJECTIVES_ATTR)
        stored_directions = [d.name.lower() for d in self.study.directions]
        if stored is None:
            self.study.set_user_attr(OBJECTIVES_ATTR, self.objectives)
            stored = self.objectives
        if stored != self.objectives or stored_directions != list(directions):
            raise ConfigError(
                f"study {study_name!r} was run with objectives {dict(zip(stored, stored_directions))}, this run asks for "
                f"{dict(zip(self.objectives, directions))}; use the same scorers or choose a new study.name"
            )

    def count_complete(self) -> int:
        return len(self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))

    def fail_interrupted(self) -> list[FrozenTrial]:
        """Trials an interrupted run left RUNNING are failed, so they are neither lost nor repeated."""
        stale = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        for trial in stale:
            self.study.tell(trial.number, state=TrialState.FAIL)
        return stale

    def ask(self, space: SearchSpace, layers: Mapping[str, int]) -> tuple[optuna.Trial, dict[str, dict[str, Any]]]:
        """The next trial and its sample; an enqueued baseline comes first, with its overrides applied."""
        trial = self.study.ask()
        baseline = trial.user_attrs.get(BASELINE_ATTR)
        return trial, space.sample(trial, layers, baseline["overrides"] if baseline else None)

    def enqueue_baselines(self, baselines: Sequence[Baseline], budget: int) -> list[Baseline]:
        """Queue the baselines ahead of the sampler, at most `budget` of them, once: only a study
        without any trial gets them. Returns those queued."""
        if self.study.get_trials(deepcopy=False):
            return []
        baselines = list(baselines)[:budget]
        for baseline in baselines:
            attrs = {"name": baseline.name, "overrides": baseline.overrides}
            self.study.enqueue_trial(baseline.params, user_attrs={BASELINE_ATTR: attrs})
        return baselines

    def waiting_baselines(self, baselines: Sequence[Baseline]) -> list[Baseline]:
        """The baselines still queued in the study (all that were queued, in a new study)."""
        waiting = {
            (t.user_attrs.get(BASELINE_ATTR) or {}).get("name")
            for t in self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        }
        return [baseline for baseline in baselines if baseline.name in waiting]

    def tell(
        self, trial: optuna.Trial, values: dict[str, float] | None, layers: Mapping[str, list[Any]] | None = None
    ) -> None:
        if values is None:
            self.study.tell(trial, state=TrialState.FAIL)
            return
        if layers:
            trial.set_user_attr(LAYERS_ATTR, dict(layers))
        self.study.tell(trial, [values[name] for name in self.objectives])

    def completed(self) -> list[CompletedTrial]:
        return [
            CompletedTrial(
                t.number,
                list(t.values),
                dict(t.params),
                t.user_attrs.get(RUN_ID_ATTR),
                (t.user_attrs.get(BASELINE_ATTR) or {}).get("name"),
                t.user_attrs.get(LAYERS_ATTR, {}),
            )
            for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        ]
