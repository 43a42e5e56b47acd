"""One opening of a study as a backend drives it: the search, the tracker, the counts, and the
records every trial goes through, whichever backend runs it.

A trial is claimed (owned by this process, `autoprune.liveness`) before its child run exists, told
to Optuna before its run is closed, and a trial stopped by anything but its own error is failed, so
a kill between any two steps leaves a state the next run repairs (`recover`). The steps are named
for the tests that kill a study at each of them (`autoprune.steps`).
"""

from __future__ import annotations

import logging
import re
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from contextlib import suppress
from typing import Any

import optuna

from autoprune.components import Compressor, Direction
from autoprune.constraints import is_feasible, violations
from autoprune.context import StudyContext
from autoprune.fidelity import Gate, TrialStopped
from autoprune.pareto import hypervolume, pareto_front
from autoprune.plan import Plan
from autoprune.review import trial_name
from autoprune.search import BASELINE_ATTR, RUN_ID_ATTR, Claim, OptunaSearch
from autoprune.steps import reached
from autoprune.tracking import BASELINE, StudyTracker, expand_lists, flatten
from autoprune.trial import TrialError, TrialResult

log = logging.getLogger("autoprune")
_LAYER_KEY = re.compile(r"\.\d+$")


def summary(params: dict[str, Any]) -> str:
    """The sampled scalar parameters of a trial (per-layer families are in MLflow)."""
    return " ".join(
        f"{key}={value:.3g}" if isinstance(value, float) else f"{key}={value}"
        for key, value in params.items()
        if not _LAYER_KEY.search(key)
    )


def _numeric_info(info: dict[str, Any]) -> dict[str, float]:
    return {key: float(value) for key, value in expand_lists(info).items() if isinstance(value, (int, float))}


def front_hypervolume(search: OptunaSearch, complete: dict[int, list[float]], directions: Sequence[Direction]) -> float:
    """The hypervolume of the front of `complete` (trial number -> values), from the study's reference point."""
    if not complete:
        return 0.0
    front = pareto_front(complete, directions)
    return hypervolume([complete[number] for number in front], search.hypervolume_reference(complete), directions)


def fail_abandoned(search: OptunaSearch) -> None:
    """Fail the trials that processes now gone left running (their baselines are queued again)."""
    for stale in search.fail_abandoned():
        log.info(f"trial {stale.number} was left running by a process that is gone; recorded as failed")


class StudyRun:
    """The state of one invocation: the search, the tracker, the dense context (None when the
    study has nothing left to run), the timings, the trials run and failed."""

    def __init__(
        self,
        plan: Plan,
        search: OptunaSearch,
        tracker: StudyTracker,
        context: StudyContext | None,
        seconds: defaultdict[str, list[float]],
    ):
        self.plan, self.search, self.tracker, self.context, self.seconds = plan, search, tracker, context, seconds
        self.n_trials = plan.config.search.n_trials
        self.max_failures = plan.config.search.max_failures or self.n_trials
        self.ran = self.failures = self.pruned = 0
        self.last_error = ""
        self._run_ids: dict[int, str] = {}  # child runs of the trials this invocation has open
        # per-layer family lengths, from the dense layout (compressors may shrink it within a trial)
        self.layers: dict[str, int] = {}
        for compressor in plan.compressors if context else []:
            section = plan.config.space[compressor.name]
            self.layers[compressor.name] = compressor.per_layer_count(section, context.layout)
            described = compressor.summary(section, context.layout)
            if described:
                log.info(f"{compressor.name}: {described}")

    @property
    def stopped(self) -> bool:
        """This run has failed as many trials as `search.max_failures` allows."""
        return self.failures >= self.max_failures

    def timed(self, phase: str, action: Callable[..., Any], *args: Any) -> Any:
        started = time.perf_counter()
        value = action(*args)
        self.seconds[phase].append(time.perf_counter() - started)
        return value

    def recover(self) -> None:
        """Fail the trials dead processes left running (their baselines are queued again) and close
        the MLflow runs they left open, as Optuna records them."""
        fail_abandoned(self.search)
        with self.search.lock():  # two processes must not close the same run twice
            self.tracker.reconcile(self.search.trials(), self.plan.objectives, self.search.abandoned)

    def claim(self) -> Claim | tuple[optuna.Trial, dict[str, dict[str, Any]]]:
        """The next trial and its sample, or why there is none (see `OptunaSearch.claim`)."""
        return self.timed("sampler", self.search.claim, self.n_trials, self.plan.space, self.layers)

    def compressors_for(self, sample: dict[str, dict[str, Any]]) -> list[Compressor]:
        """The compressors a sample runs, in the plan's order (a baseline runs its own alone)."""
        return [compressor for compressor in self.plan.compressors if compressor.name in sample]

    def open_trial(self, trial: optuna.Trial, sample: dict[str, dict[str, Any]]) -> None:
        """Name a claimed trial and open its child run, linked from the trial."""
        reached("trial.claimed")
        baseline = _baseline(trial)
        name = trial_name(trial.number, trial.params, baseline)
        self.timed("sampler", self.search.name_trial, trial, name)
        tags = {BASELINE: baseline} if baseline else {}
        run_id = self.timed("tracking", self.tracker.start_trial, trial.number, name, flatten(sample), tags)
        self._run_ids[trial.number] = run_id
        reached("trial.run_created")
        self.timed("sampler", trial.set_user_attr, RUN_ID_ATTR, run_id)
        reached("trial.run_linked")
        self.ran += 1

    def complete_trial(self, trial: optuna.Trial, result: TrialResult) -> None:
        """Tell Optuna the trial's values, then close its run with them and log the line."""
        reached("trial.scored")
        run_id = self._run_ids[trial.number]
        for phase, value in result.seconds.items():
            self.seconds[phase].append(value)
        layers = {key: value for key, value in result.info.items() if isinstance(value, list)}
        metrics = {**result.values, **_numeric_info(result.info)}
        try:  # a constraint on a figure the trial did not log fails the trial
            broken = violations(self.plan.constraints, metrics) if self.plan.constraints else None
        except TrialError as error:
            self.fail_trial(trial, error)
            return
        if not self.timed("sampler", self.search.tell, trial, result.values, layers, result.stages, broken):
            log.warning(f"trial {trial.number:3d} was failed by another process while it ran; result dropped")
            self.tracker.mark_killed(self._run_ids.pop(trial.number))
            return
        reached("trial.told")
        metrics.update({f"seconds_{phase}": value for phase, value in result.seconds.items()})
        feasible = is_feasible(broken) if broken is not None else None
        self.timed("tracking", self.tracker.end_trial, run_id, "COMPLETE", metrics, None, layers, False, feasible)
        del self._run_ids[trial.number]
        reached("trial.closed")
        self.timed("tracking", self._log_hypervolume)
        values = " ".join(f"{name}={result.values[name]:.4g}" for name in self.plan.objectives)
        elapsed = result.seconds["compress"] + result.seconds["score"]
        marks = "  infeasible" if feasible is False else ""
        done = self.search.count_complete()
        log.info(
            f"trial {trial.number:3d} [{done}/{self.n_trials}]  {values}  {_label(trial)}  ({elapsed:.1f}s){marks}"
        )

    def gate(self) -> Gate | None:
        """The multi-fidelity gate a trial starting now is checked by: the study's completed trials
        so far (`autoprune.fidelity`). None with search.fidelity off, and once this run has stopped
        n_trials trials early, so that a sampler stuck where every trial is dominated still ends."""
        if not self.plan.config.search.fidelity or self.pruned >= self.n_trials:
            return None
        measured = self.timed("sampler", self.search.measured)
        return Gate(dict(zip(self.plan.objectives, self.plan.directions)), measured)

    def prune_trial(self, trial: optuna.Trial, stopped: TrialStopped) -> None:
        """Record a trial the multi-fidelity gate stopped as PRUNED, with the stages it reached (as
        metrics `stage.<scorer>/<stage>.<objective>`); it does not count towards n_trials."""
        if not self.timed("sampler", self.search.prune, trial, stopped.stages):
            log.warning(f"trial {trial.number:3d} was failed by another process while it ran; result dropped")
            self.tracker.mark_killed(self._run_ids.pop(trial.number))
            return
        metrics = {
            f"stage.{key}.{name}": value for key, partial in stopped.stages.items() for name, value in partial.items()
        }
        self.timed("tracking", self.tracker.end_trial, self._run_ids.pop(trial.number), "PRUNED", metrics)
        self.pruned += 1
        log.info(f"trial {trial.number:3d} stopped early: {stopped}  {_label(trial)}")

    def fail_trial(self, trial: optuna.Trial, error: BaseException) -> None:
        """Record a trial that raised as failed (a baseline is queued again); the study goes on."""
        self.failures += 1
        self.last_error = f"{type(error).__name__}: {error}"
        requeued = self.timed("sampler", self.search.fail, trial)
        self.timed("tracking", self.tracker.end_trial, self._run_ids[trial.number], "FAIL", None, error)
        del self._run_ids[trial.number]
        again = f"; baseline {requeued} queued again" if requeued else ""
        log.warning(f"trial {trial.number:3d} failed: {self.last_error}  [{summary(trial.params)}]{again}")

    def abandon_trial(self, trial: optuna.Trial) -> None:
        """A trial stopped by something other than its own error (Ctrl-C, SIGTERM, a tracking server
        gone): failed in Optuna unless it completed, and its run, if any, marked killed when MLflow
        can still be reached (otherwise the next run's reconcile closes it)."""
        if not self.search.is_complete(trial):
            self.search.fail(trial)
            run_id = self._run_ids.pop(trial.number, None)
            if run_id:
                with suppress(Exception):
                    self.tracker.mark_killed(run_id)

    def _log_hypervolume(self) -> None:
        """The front's hypervolume so far (of the trials within the constraints), on the parent at
        step = completed trials (a curve that flattens when the search stops finding better trade-offs)."""
        completed = self.search.completed()
        feasible = {t.number: t.values for t in completed if t.feasible}
        self.tracker.log_hypervolume(front_hypervolume(self.search, feasible, self.plan.directions), len(completed))


def _baseline(trial: optuna.Trial) -> str | None:
    return (trial.user_attrs.get(BASELINE_ATTR) or {}).get("name")


def _label(trial: optuna.Trial) -> str:
    baseline = _baseline(trial)
    return f"baseline {baseline}" if baseline else summary(trial.params)
