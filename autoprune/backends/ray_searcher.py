"""The driver's side of the Ray Tune backend: Ray's `OptunaSearch` over the study's own Optuna
study, claiming and recording trials exactly as the local backend does.

Ray's searcher asks the study autoprune opened (its name and storage, so the baselines enqueued
there come first) with the configured sampler object (seeded for this opening of the study). Its
search space is a define-by-run function that marks the asked trial as this process's and samples
it with the study's `SearchSpace` (conditional parameters, per-layer families, a baseline's
overrides), as a local claim does. Around Ray's ask this searcher adds what the records need:

- the budget, under the study lock: no trial is asked for once the study has, or is running, its
  `search.n_trials` (`FINISHED` when they are complete; None, "ask again later", while some run);
- the records, from this process alone (`StudyRun`): a trial's child run is opened before Tune
  hands it to a worker and closed from the worker's outcome in `on_trial_complete`, so every run
  nests under the one parent run and workers never reach the stores;
- liveness: one heartbeat thread beats every trial this process has open.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import optuna
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch as RayOptunaSearch

from autoprune.backends.ray_worker import OUTCOME_KEY, decode, encode
from autoprune.backends.study_run import StudyRun
from autoprune.fidelity import TrialStopped
from autoprune.liveness import Heartbeat
from autoprune.search import Claim
from autoprune.storage import open_storage
from autoprune.trial import TrialError

log = logging.getLogger("autoprune")
WAIT_POLL_S = 1.0  # how often a process whose budget runs elsewhere looks again
_DRIVER_ONLY = ("study", "_open", "_sampled", "worker_trials")  # not part of the state Tune pickles


class RemoteTraceback(Exception):
    """Where a worker raised: the cause of the error the driver records, so `error.txt` shows it."""

    def __str__(self) -> str:
        return f'\n"""\n{self.args[0]}"""'


class StudySearcher(RayOptunaSearch):
    """Ray Tune's Optuna searcher bound to one opening of a study (see the module's docstring)."""

    def __init__(self, study: StudyRun):
        self.study = study
        self._open: dict[str, optuna.Trial] = {}  # Tune's trial id -> the claimed Optuna trial
        self._sampled: dict[int, dict[str, dict[str, Any]]] = {}  # trial number -> sample, from the ask
        self._full = False  # this process's open trials fill the rest of the budget
        self._waiting = False  # for other processes' trials (said once)
        self.worker_trials: Counter[int] = Counter()  # trials each worker process ran, by its pid
        super().__init__(
            space=self._define,
            metric=list(study.plan.objectives),
            mode=["min" if direction == "minimize" else "max" for direction in study.plan.directions],
            sampler=study.search.study.sampler,
            study_name=study.plan.study_name,
            storage=open_storage(study.search.storage_uri),
        )

    def __getstate__(self) -> dict[str, Any]:
        """Tune pickles its search algorithm for its own restore, which a study never uses (a killed
        study resumes from Optuna's storage): Ray's part of the state only."""
        return {key: value for key, value in self.__dict__.items() if key not in _DRIVER_ONLY}

    def save_to_dir(self, checkpoint_dir: str, session_str: str = "default") -> None:
        """Nothing: Optuna's storage is the record (see `__getstate__`)."""

    def _define(self, trial: optuna.Trial) -> None:
        """The define-by-run space: the asked trial becomes this process's, then is sampled."""
        search = self.study.search
        search.own(trial)
        self._sampled[trial.number] = search.sample(trial, self.study.plan.space, self.study.layers)

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        """The next trial's sample for Tune, its run open; FINISHED when the study has its completed
        trials (or this run its failures); None while the rest of the budget is running."""
        if self.study.stopped:
            return Searcher.FINISHED
        if self._full:
            return None
        blocked = self.study.timed("sampler", self._claim, trial_id)
        if blocked is Claim.DONE:
            return Searcher.FINISHED
        if blocked is Claim.WAIT:
            self._wait()
            return None
        self._waiting = False
        trial = self._ot_trials[trial_id]
        self._open[trial_id] = trial
        sample = self._sampled.pop(trial.number)
        self.study.open_trial(trial, sample)
        return {"number": trial.number, "sample": sample, "gate": encode(self.study.gate())}

    def _claim(self, trial_id: str) -> Claim | None:
        """Ask Ray's searcher for a trial (which runs `_define`) if the budget allows, under the lock."""
        with self.study.search.lock():
            blocked = self.study.search.blocked(self.study.n_trials)
            if blocked is None:
                super().suggest(trial_id)
        return blocked

    def _wait(self) -> None:
        """The rest of the budget is running: this process's trials (nothing to do until one ends)
        or other processes' (look again every WAIT_POLL_S, failing the trials of dead ones)."""
        if self._open:
            self._full = True
            return
        if not self._waiting:
            log.info("waiting for the trials other processes are running")
        self._waiting = True
        time.sleep(WAIT_POLL_S)
        self.study.recover()

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        """Nothing: a trial reports once, as it completes."""

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        """Record the worker's outcome: completed, stopped early by the gate (PRUNED), or failed with
        the error it raised there."""
        trial = self._open.pop(trial_id, None)
        if trial is None:
            return
        self._full = False
        outcome = decode(result[OUTCOME_KEY]) if result and OUTCOME_KEY in result else None
        if outcome is not None:
            self.worker_trials[outcome.pid] += 1
            if outcome.built_s is not None:
                self.study.seconds["worker_build"].append(outcome.built_s)
        if outcome is None:
            what = "its Ray worker failed" if error else "Ray Tune stopped it"
            self.study.fail_trial(trial, TrialError(f"the trial ended without a result: {what} (see Ray's logs)"))
        elif outcome.result is not None:
            self.study.complete_trial(trial, outcome.result)
        elif outcome.stopped is not None:
            self.study.prune_trial(trial, TrialStopped(*outcome.stopped))
        else:
            failure = outcome.error or TrialError("the worker sent no result")
            failure.__cause__ = RemoteTraceback(outcome.traceback)
            self.study.fail_trial(trial, failure)

    @contextmanager
    def recording(self) -> Iterator[None]:
        """While Tune runs: a heartbeat for this process's open trials; when Tune stops early
        (Ctrl-C, SIGTERM, an error), every trial still open is failed and its run marked killed."""
        search = self.study.search
        try:
            with Heartbeat(self._beat, search.heartbeat_interval_s):
                yield
        except BaseException:
            for trial in self._open.values():
                self.study.abandon_trial(trial)
            self._open.clear()
            raise

    def _beat(self) -> None:
        for trial in list(self._open.values()):
            self.study.search.beat(trial)
