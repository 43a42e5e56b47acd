"""The flow of one study: validate, load, calibrate once, claim and run trials, track, report the Pareto set."""

from __future__ import annotations

import logging
import platform
import re
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from omegaconf import DictConfig, OmegaConf

from autoprune import __version__
from autoprune.builder import build_context, prepare_components
from autoprune.components import Direction
from autoprune.context import StudyContext
from autoprune.errors import AutopruneError, Interrupted
from autoprune.liveness import Heartbeat
from autoprune.pareto import hypervolume, pareto_front
from autoprune.plan import Plan, prepare
from autoprune.progress import set_progress
from autoprune.registry import Registry
from autoprune.report import format_table, front_rows
from autoprune.review import finished_description, study_description, study_params, trial_name
from autoprune.review_links import dashboard_command, run_url, runs_view_url, ui_address
from autoprune.search import BASELINE_ATTR, RUN_ID_ATTR, Claim, OptunaSearch
from autoprune.steps import reached
from autoprune.tracking import BASELINE, StudyOutcome, StudyTracker, expand_lists, flatten
from autoprune.trial import run_trial

log = logging.getLogger("autoprune")
_LAYER_KEY = re.compile(r"\.\d+$")
WAIT_POLL_S = 1.0  # how often a process waiting for other processes' trials looks again


@dataclass
class StudyResult:
    study_name: str
    parent_run_id: str
    rows: list[dict[str, Any]]  # one per completed trial: number, objective values, parameters
    front: list[int]  # trial numbers of the Pareto set
    ran: int  # trials run by this invocation (completed or failed)
    seconds: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))


def _summary(params: dict[str, Any]) -> str:
    """The sampled scalar parameters of a trial (per-layer families are in MLflow)."""
    return " ".join(
        f"{key}={value:.3g}" if isinstance(value, float) else f"{key}={value}"
        for key, value in params.items()
        if not _LAYER_KEY.search(key)
    )


def _numeric_info(info: dict[str, Any]) -> dict[str, float]:
    return {key: float(value) for key, value in expand_lists(info).items() if isinstance(value, (int, float))}


class _StudyRun:
    """The mutable state of one invocation: the search, the tracker, the timings, the failures."""

    def __init__(self, plan: Plan, search: OptunaSearch, tracker: StudyTracker, context: StudyContext | None, seconds):
        self.plan, self.search, self.tracker, self.context, self.seconds = plan, search, tracker, context, seconds
        self.ran = self.failures = 0
        self.last_error = ""
        # per-layer family lengths, from the dense layout (compressors may shrink it within a trial)
        self.layers: dict[str, int] = {}
        for compressor in plan.compressors if context else []:
            section = plan.config.space[compressor.name]
            self.layers[compressor.name] = compressor.per_layer_count(section, context.layout)
            summary = compressor.summary(section, context.layout)
            if summary:
                log.info(f"{compressor.name}: {summary}")

    def _timed(self, phase: str, action, *args):
        started = time.perf_counter()
        value = action(*args)
        self.seconds[phase].append(time.perf_counter() - started)
        return value

    def recover(self) -> None:
        """Fail the trials dead processes left running (their baselines are queued again) and close
        the MLflow runs they left open, as Optuna records them."""
        _fail_abandoned(self.search)
        with self.search.lock():  # two processes must not close the same run twice
            self.tracker.reconcile(self.search.trials(), self.plan.objectives, self.search.abandoned)

    def run(self, max_failures: int) -> None:
        """Claim and run trials until the study has its completed trials, waiting while the last
        ones run in other processes (whose dead trials are then failed and run again here)."""
        n_trials = self.plan.config.search.n_trials
        waiting = False
        while self.failures < max_failures:
            claimed = self._timed("sampler", self.search.claim, n_trials, self.plan.space, self.layers)
            if claimed is Claim.DONE:
                return
            if claimed is Claim.WAIT:
                if not waiting:
                    log.info("waiting for the trials other processes are running")
                waiting = True
                time.sleep(WAIT_POLL_S)
                self.recover()
                continue
            waiting = False
            self.one_trial(*claimed)

    def _record_failure(self, trial: optuna.Trial, run_id: str, error: Exception) -> None:
        self.failures += 1
        self.last_error = f"{type(error).__name__}: {error}"
        requeued = self._timed("sampler", self.search.fail, trial)
        self._timed("tracking", self.tracker.end_trial, run_id, "FAIL", None, error)
        again = f"; baseline {requeued} queued again" if requeued else ""
        log.warning(f"trial {trial.number:3d} failed: {self.last_error}  [{_summary(trial.params)}]{again}")

    def one_trial(self, trial: optuna.Trial, sample: dict[str, dict[str, Any]]) -> None:
        """Run and record one claimed trial. A trial that raises is recorded as failed and the
        study goes on; anything else that stops it (Ctrl-C, SIGTERM, a tracking server gone)
        fails it in Optuna before the error goes on up.

        Optuna is told first and MLflow follows, so a kill in between leaves a record that
        `StudyTracker.reconcile` completes from Optuna's values on the next run.
        """
        run_id = None
        try:
            reached("trial.claimed")
            baseline = (trial.user_attrs.get(BASELINE_ATTR) or {}).get("name")
            tags = {BASELINE: baseline} if baseline else {}
            name = trial_name(trial.number, trial.params, baseline)
            self._timed("sampler", self.search.name_trial, trial, name)
            run_id = self._timed("tracking", self.tracker.start_trial, trial.number, name, flatten(sample), tags)
            reached("trial.run_created")
            self._timed("sampler", trial.set_user_attr, RUN_ID_ATTR, run_id)
            reached("trial.run_linked")
            self.ran += 1
            with Heartbeat(lambda: self.search.beat(trial), self.search.heartbeat_interval_s):
                try:
                    compressors = [
                        c for c in self.plan.compressors if c.name in sample
                    ]  # a baseline runs its own compressor alone
                    result = run_trial(self.context, compressors, self.plan.scorers, sample)
                except Exception as error:  # a failed trial is recorded and the study goes on
                    self._record_failure(trial, run_id, error)
                    return
                reached("trial.scored")
                for phase, value in result.seconds.items():
                    self.seconds[phase].append(value)
                layers = {key: value for key, value in result.info.items() if isinstance(value, list)}
                if not self._timed("sampler", self.search.tell, trial, result.values, layers):
                    log.warning(f"trial {trial.number:3d} was failed by another process while it ran; result dropped")
                    self.tracker.mark_killed(run_id)
                    return
                reached("trial.told")
                metrics = {**result.values, **_numeric_info(result.info)}
                metrics.update({f"seconds_{phase}": value for phase, value in result.seconds.items()})
                self._timed("tracking", self.tracker.end_trial, run_id, "COMPLETE", metrics, None, layers)
                reached("trial.closed")
                self._timed("tracking", self._log_hypervolume)
        except BaseException:  # a completed trial stays completed: its run is closed by the next run's reconcile
            if not self.search.is_complete(trial):
                self.search.fail(trial)
                self._close_quietly(run_id)
            raise
        values = " ".join(f"{name}={result.values[name]:.4g}" for name in self.plan.objectives)
        elapsed = result.seconds["compress"] + result.seconds["score"]
        label = f"baseline {baseline}" if baseline else _summary(trial.params)
        done = self.search.count_complete()
        log.info(
            f"trial {trial.number:3d} [{done}/{self.plan.config.search.n_trials}]  {values}  {label}  ({elapsed:.1f}s)"
        )

    def _log_hypervolume(self) -> None:
        """The front's hypervolume so far, on the parent at step = completed trials (a curve that
        flattens when the search stops finding better trade-offs)."""
        complete = self.search.complete_values()
        self.tracker.log_hypervolume(_hypervolume(self.search, complete, self.plan.directions), len(complete))

    def _close_quietly(self, run_id: str | None) -> None:
        """Mark the run killed if MLflow can still be reached (reconcile does it later otherwise)."""
        if run_id:
            with suppress(Exception):
                self.tracker.mark_killed(run_id)


def _hypervolume(search: OptunaSearch, complete: dict[int, list[float]], directions: list[Direction]) -> float:
    if not complete:
        return 0.0
    front = pareto_front(complete, directions)
    return hypervolume([complete[number] for number in front], search.hypervolume_reference(complete), directions)


def _fail_abandoned(search: OptunaSearch) -> None:
    for stale in search.fail_abandoned():
        log.info(f"trial {stale.number} was left running by a process that is gone; recorded as failed")


def _open_tracking(plan: Plan, search: OptunaSearch) -> StudyTracker:
    config = plan.config
    tracker = StudyTracker(config.mlflow.tracking_uri, config.mlflow.experiment, plan.study_name)
    with search.lock():  # one parent run, however many processes start at once
        tracker.start_study(
            OmegaConf.to_yaml(plan.resolved),
            plan.space.describe(),
            {
                "autoprune.version": __version__,
                "autoprune.sampler": config.search.sampler,
                "autoprune.n_trials": str(config.search.n_trials),
                "autoprune.model": config.model.name,
                "autoprune.objectives": ",".join(plan.objectives),
                **machine_tags(plan.config.model.device),
            },
            study_params(plan),
            study_description(plan),
            plan.objectives,
            plan.directions,
        )
    return tracker


def machine_tags(device: str) -> dict[str, str]:
    """What timings depend on: the device, torch's version and its CPU threads (a resumed study on
    another machine overwrites them; trial runs keep their own figures)."""
    import torch

    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else _cpu_name()
    return {
        "autoprune.device": f"{device} ({name})",
        "autoprune.torch": torch.__version__,
        "autoprune.threads": str(torch.get_num_threads()),
    }


def _cpu_name() -> str:
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.machine() or "cpu"


def _report(
    plan: Plan, rows: list[dict[str, Any]], front: list[int], names: dict[int, str], tracker: StudyTracker
) -> None:
    """The front as a table, then where to review the study: its runs and parent run in MLflow's UI,
    and the command that opens the Optuna study in optuna-dashboard."""
    best_first = front_rows(rows, front, plan.objectives, plan.directions)
    if best_first:
        table = format_table([{**row, "name": names[row["trial"]]} for row in best_first], [*plan.objectives, "name"])
        log.info(f"\nPareto front ({len(best_first)} of {len(rows)} completed trials):\n{table}\n")
    base, command = ui_address(plan.config.mlflow.tracking_uri)
    start = f"start the UI with: {command}\n  " if command else ""
    log.info(
        f"review in MLflow: {start}"
        f"the study's runs:  {runs_view_url(base, tracker.experiment_id, plan.study_name)}\n"
        f"  its parent run:    {run_url(base, tracker.experiment_id, tracker.parent_id)}"
    )
    log.info(f"review in optuna-dashboard: {dashboard_command(plan.config.study.storage)}")


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (`kill`, a job scheduler's stop) ends a study as Ctrl-C does: the running trial is
    recorded as failed, its run as killed, and the study stays resumable."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_study(resolved: DictConfig, registry: Registry | None = None) -> StudyResult:
    """Run (or resume, or join) the study the config describes until it has `search.n_trials`
    completed trials. Several processes may run one study at once: they share its storage."""
    plan = prepare(resolved, registry)
    set_progress(plan.config.progress)
    with _terminate_as_interrupt():
        return _run(plan)


def _run(plan: Plan) -> StudyResult:
    config = plan.config
    seconds: dict[str, list[float]] = defaultdict(list)
    study_started = time.perf_counter()
    log.info(f"study {plan.study_name} (resume or extend it with study.name={plan.study_name})")
    tracker = search = None
    try:
        search = OptunaSearch(
            config.search,
            plan.study_name,
            config.study.storage,
            plan.objectives,
            plan.directions,
            heartbeat_interval_s=config.study.heartbeat_interval,
        )
        queued = search.enqueue_baselines(plan.baselines, config.search.n_trials)
        if queued:
            names = ", ".join(baseline.name for baseline in queued)
            log.info(f"baselines: {len(queued)} of {len(plan.baselines)} queued ahead of the sampler: {names}")
        done = search.count_complete()
        missing = config.search.n_trials - done
        _fail_abandoned(search)  # before sizing the statistics: a killed baseline is queued again
        # Load and calibrate before touching MLflow, so a bad model leaves no empty parent run behind.
        pending = search.unfinished_baselines(plan.baselines)
        context = build_context(plan, seconds, pending) if missing > 0 else None
        dense = prepare_components(plan, context, seconds, pending) if context is not None else {}
        started = time.perf_counter()
        tracker = _open_tracking(plan, search)
        tracker.log_study_metrics(dense)
        seconds["tracking_once"].append(time.perf_counter() - started)

        run = _StudyRun(plan, search, tracker, context, seconds)
        run.recover()
        reached("study.opened")
        max_failures = config.search.max_failures or config.search.n_trials
        if context is None:
            log.info(
                f"study {plan.study_name} already has {done} of {config.search.n_trials} completed trials; nothing to run"
            )
        else:
            arrows = " ".join(f"{o}{'↓' if d == 'minimize' else '↑'}" for o, d in zip(plan.objectives, plan.directions))
            worker = (
                f", sampler seed {search.seed} (opening {search.worker + 1} of this study)" if search.worker else ""
            )
            log.info(
                f"search: {config.search.sampler}, {missing} trials to run ({done} of {config.search.n_trials} "
                f"complete), objectives {arrows}{worker}"
            )
            run.run(max_failures)

        started = time.perf_counter()
        run.recover()  # runs of trials failed while this process waited
        completed = search.completed()
        names = {t.number: trial_name(t.number, t.params, t.baseline) for t in completed}
        marked = any(t.baseline for t in completed)
        rows = [
            {
                "trial": t.number,
                **dict(zip(plan.objectives, t.values)),
                **({"baseline": t.baseline or "-"} if marked else {}),
                **t.params,
            }
            for t in completed
        ]
        complete = {t.number: t.values for t in completed}
        front = pareto_front(complete, plan.directions)
        stopped = run.failures >= max_failures
        outcome = StudyOutcome(
            rows,
            front,
            plan.objectives,
            plan.directions,
            run_ids={t.number: t.run_id for t in completed if t.run_id},
            names=names,
            layers={t.number: t.layers for t in completed if t.layers},
            hypervolume=_hypervolume(search, complete, plan.directions),
        )
        reference = search.hypervolume_reference(complete) if complete else None
        description = finished_description(plan, rows, front, names, outcome.hypervolume, reference)
        with search.lock():  # processes finishing together write one Pareto table, not two interleaved
            tracker.finish_study(outcome, description, status="FAILED" if stopped else "FINISHED")
    except KeyboardInterrupt:
        if tracker is not None:
            tracker.abort_study()
        raise Interrupted(f"interrupted; resume with study.name={plan.study_name}") from None
    finally:
        if search is not None:
            search.close()
    seconds["tracking_once"].append(time.perf_counter() - started)
    seconds["total"].append(time.perf_counter() - study_started)
    _report(plan, rows, front, names, tracker)
    if stopped:
        raise AutopruneError(
            f"stopped after {run.failures} failed trials (search.max_failures={max_failures}); last error: {run.last_error}"
        )
    return StudyResult(plan.study_name, tracker.parent_id, rows, front, run.ran, seconds)
