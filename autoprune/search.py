"""The Optuna search backend: samplers by name, a resumable study, ask-and-tell trials.

The trial function (`autoprune.trial.run_trial`) knows nothing of Optuna; this module only
turns the declarative space into `suggest_*` calls and records outcomes in Optuna's storage,
so another backend (Ray Tune) can drive the same trials.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from autoprune.components import Direction
from autoprune.config import SearchConfig
from autoprune.constraints import CONSTRAINTS_ATTR, is_feasible, violations_of
from autoprune.errors import ConfigError
from autoprune.fidelity import STAGES_ATTR, Measured
from autoprune.liveness import HEARTBEAT_ATTR, INTERVAL_ATTR, OWNER_ATTR, abandoned, close_owner, open_owner
from autoprune.pareto import reference_point
from autoprune.samplers import build_sampler
from autoprune.space import SearchSpace
from autoprune.storage import open_storage, storage_file, study_lock

OBJECTIVES_ATTR = "autoprune.objectives"
RUN_ID_ATTR = "mlflow_run_id"
BASELINE_ATTR = "autoprune.baseline"  # {"name", "overrides": {compressor: {param: value}}, "params", "attempt"}
LAYERS_ATTR = "autoprune.layers"  # the per-layer lists a trial's compressors reported, e.g. prune.ratio
NAME_ATTR = "autoprune.name"  # what the trial is, as its MLflow run is named (optuna-dashboard lists it)
REFERENCE_ATTR = "autoprune.hypervolume_reference"  # fixed once per study, see pareto.reference_point
SAMPLER_ATTR = "autoprune.sampler"  # the sampler the study was created with (search.sampler)
SEED_ATTR = "autoprune.seed"  # the study seed it was created with (search.seed; processes derive theirs)


def check_identity(study: optuna.Study, search: SearchConfig, constraints: Sequence[str]) -> None:
    """Record the sampler, seed and constraints a new study is run with; refuse to resume one with
    others, whose trials would not continue the same search (nor be judged by the same bounds)."""
    stored = study.user_attrs.get(SAMPLER_ATTR), study.user_attrs.get(SEED_ATTR)
    if stored == (None, None):  # a new study (or one created before they were recorded)
        study.set_user_attr(SAMPLER_ATTR, search.sampler)
        study.set_user_attr(SEED_ATTR, search.seed)
        study.set_user_attr(CONSTRAINTS_ATTR, list(constraints))
        return
    if stored != (search.sampler, search.seed):
        fix = " ".join(f"search.{key}={value}" for key, value in zip(("sampler", "seed"), stored))
        raise ConfigError(
            f"study {study.study_name!r} was run with sampler {stored[0]} seed {stored[1]}; this run asks for "
            f"{search.sampler} seed {search.seed}: resume it with {fix} or use another study.name"
        )
    recorded = study.user_attrs.get(CONSTRAINTS_ATTR, [])
    if recorded != list(constraints):
        listed = f"[{','.join(recorded)}]"
        raise ConfigError(
            f"study {study.study_name!r} was run with constraints {listed}; this run asks for "
            f"[{','.join(constraints)}]: resume it with 'constraints={listed}' or use another study.name"
        )


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
    feasible: bool = True  # within the study's constraints


WORKERS_ATTR = "autoprune.workers"  # how many runs have opened the study; each samples with its own seed
BASELINES_QUEUED_ATTR = "autoprune.baselines_queued"
BASELINE_ATTEMPTS = 3  # a baseline that fails or is killed is queued again, up to this many runs in all


class Claim(Enum):
    DONE = "done"  # the study has all its completed trials
    WAIT = "wait"  # the rest of the budget is being run by other live processes


def worker_seed(seed: int, worker: int) -> int:
    """The sampler seed of the study's `worker`-th process: the study seed for the first, distinct
    seeds for the others, so processes sharing a study do not propose the same trials."""
    return seed if worker == 0 else (seed + worker * 0x9E3779B1) % 2**32


class OptunaSearch:
    """One Optuna study in persistent storage, created on first use and shared by every process
    that runs it: trials are claimed under the study lock within the budget and owned by their
    process, and only the trials of dead processes are failed. `constraints` are the study's
    bounds as text (`str(Bound)`): recorded with the study, and the keys of each told trial's
    violations, which Optuna's samplers read."""

    def __init__(
        self,
        search: SearchConfig,
        study_name: str,
        storage: str,
        objectives: Sequence[str],
        directions: Sequence[Direction],
        heartbeat_interval_s: float = 10.0,
        constraints: Sequence[str] = (),
    ):
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.objectives = list(objectives)
        self.directions = list(directions)
        self.constraints = list(constraints)
        self._reference: list[float] | None = None
        self.storage_uri = storage
        self.heartbeat_interval_s = heartbeat_interval_s
        self.locked = storage_file(storage) is not None  # a database server has no study lock
        self.owner = open_owner()
        with self.lock():
            self.study = optuna.create_study(
                study_name=study_name, storage=open_storage(storage), directions=list(directions), load_if_exists=True
            )
            self._check_objectives(study_name, list(directions))
            check_identity(self.study, search, constraints)
            if self.study.metric_names != self.objectives:
                with warnings.catch_warnings():  # experimental in Optuna; dashboards read it to name the axes
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    self.study.set_metric_names(self.objectives)
            self.worker = int(self.study.user_attrs.get(WORKERS_ATTR, 0))
            self.study.set_user_attr(WORKERS_ATTR, self.worker + 1)
        self.seed = worker_seed(search.seed, self.worker)
        self.study.sampler = build_sampler(search, self.seed, len(self.objectives))

    def close(self) -> None:
        """This run of the study is over: a trial it still owns counts as abandoned from now on."""
        close_owner(self.owner)

    def abandoned(self, trial: FrozenTrial) -> bool:
        return abandoned(trial, self.heartbeat_interval_s, unowned_is_dead=self.locked)

    def lock(self):
        """The study lock: held while trials are counted and claimed, so processes never overrun the budget."""
        return study_lock(self.storage_uri)

    def _check_objectives(self, study_name: str, directions: list[Direction]) -> None:
        stored = self.study.user_attrs.get(OBJECTIVES_ATTR)
        stored_directions = [d.name.lower() for d in self.study.directions]
        if stored is None:
            self.study.set_user_attr(OBJECTIVES_ATTR, self.objectives)
            stored = self.objectives
        if stored != self.objectives or stored_directions != directions:
            raise ConfigError(
                f"study {study_name!r} was run with objectives {dict(zip(stored, stored_directions))}, this run asks for "
                f"{dict(zip(self.objectives, directions))}; use the same scorers or choose a new study.name"
            )

    def count_complete(self) -> int:
        return len(self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))

    def claim(
        self, n_trials: int, space: SearchSpace, layers: Mapping[str, int]
    ) -> Claim | tuple[optuna.Trial, dict[str, dict[str, Any]]]:
        """The next trial of this process and its sample (an enqueued baseline first, with its
        overrides applied); `Claim.DONE` once the study has `n_trials` complete trials, and
        `Claim.WAIT` while the rest of the budget is running in other processes."""
        with self.lock():
            blocked = self.blocked(n_trials)
            if blocked is not None:
                return blocked
            trial = self.study.ask()
            self.own(trial)
        return trial, self.sample(trial, space, layers)

    def blocked(self, n_trials: int) -> Claim | None:
        """Why no trial may be claimed now (`Claim.DONE`, `Claim.WAIT`), or None when one may;
        call it under the study lock, with the claim that follows."""
        trials = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
        if sum(t.state == TrialState.COMPLETE for t in trials) >= n_trials:
            return Claim.DONE
        if len(trials) >= n_trials:
            return Claim.WAIT
        return None

    def own(self, trial: optuna.Trial) -> None:
        """Mark a trial just asked for as this process's (under the study lock, before anyone else
        could take it for abandoned)."""
        trial.set_user_attr(OWNER_ATTR, self.owner)
        trial.set_user_attr(INTERVAL_ATTR, self.heartbeat_interval_s)
        self.beat(trial)

    @staticmethod
    def sample(trial: optuna.Trial, space: SearchSpace, layers: Mapping[str, int]) -> dict[str, dict[str, Any]]:
        """The trial's sample: an enqueued baseline's overrides applied, the rest from the sampler."""
        baseline = trial.user_attrs.get(BASELINE_ATTR)
        return space.sample(trial, layers, baseline["overrides"] if baseline else None)

    def name_trial(self, trial: optuna.Trial, name: str) -> None:
        """Record what the trial is (e.g. `t001 baseline uniform wanda 0.5`), for optuna-dashboard."""
        trial.set_user_attr(NAME_ATTR, name)

    def beat(self, trial: optuna.Trial) -> None:
        """Record that this process still works on `trial` (see `autoprune.liveness`)."""
        trial.set_user_attr(HEARTBEAT_ATTR, time.time())

    def fail_abandoned(self) -> list[FrozenTrial]:
        """Fail the RUNNING trials whose process died (a killed run, a lost machine), queueing
        their baselines again; the trials of live processes are left alone."""
        failed = []
        with self.lock():
            for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                if self.abandoned(trial):
                    self.study.tell(trial.number, state=TrialState.FAIL)
                    self._requeue_baseline(trial)
                    failed.append(trial)
        return failed

    def fail(self, trial: optuna.Trial) -> str | None:
        """Record this run's trial as failed (once: a second call, or a trial another process
        already failed, changes nothing); returns its baseline's name if it was queued again."""
        with self.lock():
            if self._finished(trial):
                return None
            self.study.tell(trial, state=TrialState.FAIL)
            return self._requeue_baseline(self.study.get_trials(deepcopy=False)[trial.number])

    def _finished(self, trial: optuna.Trial) -> bool:
        return self._state(trial).is_finished()

    def is_complete(self, trial: optuna.Trial) -> bool:
        return self._state(trial) == TrialState.COMPLETE

    def _state(self, trial: optuna.Trial) -> TrialState:
        return self.study.get_trials(deepcopy=False)[trial.number].state

    def _requeue_baseline(self, trial: FrozenTrial) -> str | None:
        """Queue a failed baseline again, up to BASELINE_ATTEMPTS runs in all, so that a kill or a
        transient error never leaves the front without it."""
        attrs = trial.user_attrs.get(BASELINE_ATTR)
        if not attrs or attrs.get("attempt", 1) >= BASELINE_ATTEMPTS:
            return None
        again = {**attrs, "attempt": attrs.get("attempt", 1) + 1}
        self.study.enqueue_trial(attrs.get("params", trial.params), user_attrs={BASELINE_ATTR: again})
        return attrs["name"]

    def enqueue_baselines(self, baselines: Sequence[Baseline], budget: int) -> list[Baseline]:
        """Queue the baselines ahead of the sampler, at most `budget` of them, once per study (under
        the lock, so processes starting together queue them once; a run killed while queueing
        leaves the rest to the next). Returns those queued."""
        with self.lock():
            trials = self.study.get_trials(deepcopy=False)
            seen = {(t.user_attrs.get(BASELINE_ATTR) or {}).get("name") for t in trials}
            if self.study.user_attrs.get(BASELINES_QUEUED_ATTR) or (trials and seen == {None}):
                return []
            missing = [baseline for baseline in list(baselines)[:budget] if baseline.name not in seen]
            for baseline in missing:
                attrs = {"name": baseline.name, "overrides": baseline.overrides, "params": baseline.params}
                self.study.enqueue_trial(baseline.params, user_attrs={BASELINE_ATTR: {**attrs, "attempt": 1}})
            self.study.set_user_attr(BASELINES_QUEUED_ATTR, True)
        return missing

    def unfinished_baselines(self, baselines: Sequence[Baseline]) -> list[Baseline]:
        """The baselines queued in the study that have not completed (waiting, running elsewhere,
        or failed and queued again): what this run may still have to prepare for."""
        trials = self.study.get_trials(deepcopy=False)
        names = {t.number: (t.user_attrs.get(BASELINE_ATTR) or {}).get("name") for t in trials}
        complete = {names[t.number] for t in trials if t.state == TrialState.COMPLETE}
        return [baseline for baseline in baselines if baseline.name in set(names.values()) - complete]

    def tell(
        self,
        trial: optuna.Trial,
        values: dict[str, float],
        layers: Mapping[str, list[Any]] | None = None,
        stages: Mapping[str, Mapping[str, float]] | None = None,
        violations: Sequence[float] | None = None,
    ) -> bool:
        """Record a completed trial (its cheap stages' values, for the multi-fidelity gate, and its
        constraints' violations, which constrained samplers read); False when another process had
        failed it first (its owner looked dead: a heartbeat late by more than the grace period), so
        its result is dropped."""
        with self.lock():
            if self._finished(trial):
                return False
            if layers:
                trial.set_user_attr(LAYERS_ATTR, dict(layers))
            if stages:
                trial.set_user_attr(STAGES_ATTR, {key: dict(partial) for key, partial in stages.items()})
            for constraint, violation in zip(self.constraints, violations or (), strict=True):
                trial.set_constraint(constraint, violation)  # what the records and Optuna's samplers read
            self.study.tell(trial, [values[name] for name in self.objectives])
        return True

    def prune(self, trial: optuna.Trial, stages: Mapping[str, Mapping[str, float]]) -> bool:
        """Record a trial the multi-fidelity gate stopped (PRUNED), with the stages it reached;
        False when another process had failed it first."""
        with self.lock():
            if self._finished(trial):
                return False
            trial.set_user_attr(STAGES_ATTR, {key: dict(partial) for key, partial in stages.items()})
            self.study.tell(trial, state=TrialState.PRUNED)
        return True

    def measured(self) -> list[Measured]:
        """The completed trials as the multi-fidelity gate compares with them."""
        return [
            Measured(dict(zip(self.objectives, t.values)), t.user_attrs.get(STAGES_ATTR, {}))
            for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        ]

    def complete_values(self) -> dict[int, list[float]]:
        """The objective values of every completed trial, by number."""
        return {t.number: list(t.values) for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}

    def hypervolume_reference(self, complete: Mapping[int, Sequence[float]]) -> list[float]:
        """The study's hypervolume reference point: set once, under the study lock, from its first
        completed trial (`pareto.reference_point`), and read back by every later process."""
        if self._reference is None:
            with self.lock():
                stored = self.study.user_attrs.get(REFERENCE_ATTR)
                if stored is None:
                    stored = reference_point(complete[min(complete)], self.directions)
                    self.study.set_user_attr(REFERENCE_ATTR, stored)
            self._reference = list(stored)
        return self._reference

    def trials(self) -> dict[int, FrozenTrial]:
        """Every trial of the study by number (for reconciling the MLflow records)."""
        return {t.number: t for t in self.study.get_trials(deepcopy=False)}

    def completed(self) -> list[CompletedTrial]:
        return [
            CompletedTrial(
                t.number,
                list(t.values),
                dict(t.params),
                t.user_attrs.get(RUN_ID_ATTR),
                (t.user_attrs.get(BASELINE_ATTR) or {}).get("name"),
                t.user_attrs.get(LAYERS_ATTR, {}),
                is_feasible(violations_of(t)),
            )
            for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        ]
