"""The in-process backend: this process claims and runs one trial after another on its own
context, waiting while the last trials of the budget run in other processes."""

from __future__ import annotations

import logging
import time
from typing import Any

import optuna

from autoprune.backends import Backend
from autoprune.backends.study_run import StudyRun
from autoprune.fidelity import TrialStopped
from autoprune.liveness import Heartbeat
from autoprune.search import Claim
from autoprune.trial import run_trial

log = logging.getLogger("autoprune")
WAIT_POLL_S = 1.0  # how often a process waiting for other processes' trials looks again


class LocalBackend(Backend):
    """Trials run here, one at a time, on the context the study built."""

    name = "local"

    def run(self, study: StudyRun) -> None:
        """Claim and run trials until the study has its completed trials, waiting while the last
        ones run in other processes (whose dead trials are then failed and run again here)."""
        waiting = False
        while not study.stopped:
            claimed = study.claim()
            if claimed is Claim.DONE:
                return
            if claimed is Claim.WAIT:
                if not waiting:
                    log.info("waiting for the trials other processes are running")
                waiting = True
                time.sleep(WAIT_POLL_S)
                study.recover()
                continue
            waiting = False
            self._one_trial(study, *claimed)

    @staticmethod
    def _one_trial(study: StudyRun, trial: optuna.Trial, sample: dict[str, dict[str, Any]]) -> None:
        """Run and record one claimed trial. A trial that raises is recorded as failed and the
        study goes on; anything else that stops it fails it in Optuna before the error goes on up."""
        try:
            study.open_trial(trial, sample)
            with Heartbeat(lambda: study.search.beat(trial), study.search.heartbeat_interval_s):
                try:
                    compressors = study.compressors_for(sample)
                    result = run_trial(study.context, compressors, study.plan.scorers, sample, study.gate())
                except TrialStopped as stopped:  # dominated at a cheap stage: recorded as PRUNED
                    study.prune_trial(trial, stopped)
                    return
                except Exception as error:  # a failed trial is recorded and the study goes on
                    study.fail_trial(trial, error)
                    return
                study.complete_trial(trial, result)
        except BaseException:  # a completed trial stays completed: its run is closed by the next run's reconcile
            study.abandon_trial(trial)
            raise
