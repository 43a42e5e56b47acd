"""The flow of one study: validate, load, calibrate once, run trials, track, report the Pareto set."""

from __future__ import annotations

import logging
import re
import time
import traceback
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from autoprune import __version__
from autoprune.builder import build_context, prepare_compressors
from autoprune.context import StudyContext
from autoprune.errors import AutopruneError
from autoprune.pareto import pareto_front
from autoprune.plan import Plan, prepare
from autoprune.registry import Registry
from autoprune.report import format_table
from autoprune.search import BASELINE_ATTR, RUN_ID_ATTR, OptunaSearch
from autoprune.tracking import StudyTracker, expand_lists, flatten
from autoprune.trial import run_trial

log = logging.getLogger("autoprune")
_LAYER_KEY = re.compile(r"\.\d+$")


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

    def one_trial(self, done: int) -> bool:
        """Ask, run, record one trial; True if it completed. Failures are recorded, not raised."""
        trial, sample = self._timed("sampler", self.search.ask, self.plan.space, self.layers)
        baseline = (trial.user_attrs.get(BASELINE_ATTR) or {}).get("name")
        tags = {"autoprune.baseline": baseline} if baseline else {}
        run_id = self._timed("tracking", self.tracker.start_trial, trial.number, flatten(sample), tags)
        self._timed("sampler", trial.set_user_attr, RUN_ID_ATTR, run_id)
        self.ran += 1
        try:
            compressors = [c for c in self.plan.compressors if c.name in sample]  # a baseline runs prune alone
            result = run_trial(self.context, compressors, self.plan.scorers, sample)
        except KeyboardInterrupt:
            self.search.tell(trial, None)
            self.tracker.mark_killed(run_id)
            raise
        except Exception as error:  # a failed trial is recorded and the study goes on
            self.failures += 1
            self.last_error = f"{type(error).__name__}: {error}"
            self._timed("sampler", self.search.tell, trial, None)
            self._timed("tracking", self.tracker.end_trial, run_id, "FAIL", None, traceback.format_exc())
            log.warning(f"trial {trial.number:3d} failed: {self.last_error}  [{_summary(trial.params)}]")
            return False
        for phase, value in result.seconds.items():
            self.seconds[phase].append(value)
        layers = {key: value for key, value in result.info.items() if isinstance(value, list)}
        self._timed("sampler", self.search.tell, trial, result.values, layers)
        metrics = {**result.values, **_numeric_info(result.info)}
        metrics.update({f"seconds_{phase}": value for phase, value in result.seconds.items()})
        self._timed("tracking", self.tracker.end_trial, run_id, "COMPLETE", metrics, None, layers)
        values = " ".join(f"{name}={result.values[name]:.4g}" for name in self.plan.objectives)
        elapsed = result.seconds["compress"] + result.seconds["score"]
        label = f"baseline {baseline}" if baseline else _summary(trial.params)
        log.info(
            f"trial {trial.number:3d} [{done + 1}/{self.plan.config.search.n_trials}]  {values}  {label}  ({elapsed:.1f}s)"
        )
        return True


def _open_tracking(plan: Plan, search: OptunaSearch) -> StudyTracker:
    config = plan.config
    tracker = StudyTracker(config.mlflow.tracking_uri, config.mlflow.experiment, plan.study_name)
    tracker.start_study(
        OmegaConf.to_yaml(plan.resolved),
        plan.space.describe(),
        {
            "autoprune.version": __version__,
            "sampler": config.search.sampler,
            "n_trials": str(config.search.n_trials),
            "model": config.model.name,
            "objectives": ",".join(plan.objectives),
        },
    )
    for stale in search.fail_interrupted():
        if stale.user_attrs.get(RUN_ID_ATTR):
            tracker.mark_killed(stale.user_attrs[RUN_ID_ATTR])
        log.info(f"trial {stale.number} was interrupted by an earlier run; recorded as failed")
    return tracker


def _report(plan: Plan, rows: list[dict[str, Any]], front: list[int], parent_id: str) -> None:
    on_front = set(front)
    sign = 1 if plan.directions[0] == "minimize" else -1
    front_rows = sorted(
        (row for row in rows if row["trial"] in on_front), key=lambda row: sign * row[plan.objectives[0]]
    )
    if front_rows:
        extra = [
            key for key in front_rows[0] if key not in plan.objectives and key != "trial" and not _LAYER_KEY.search(key)
        ]
        table = format_table(front_rows, ["trial", *plan.objectives, *extra])
        log.info(f"\nPareto set ({len(front_rows)} of {len(rows)} completed trials):\n{table}\n")
    uri = plan.config.mlflow.tracking_uri
    log.info(
        f"mlflow: parent run {parent_id} '{plan.study_name}' in {uri}; browse with: mlflow ui --backend-store-uri {uri}"
    )


def run_study(resolved: DictConfig, registry: Registry | None = None) -> StudyResult:
    """Run (or resume) the study the config describes until it has `search.n_trials` completed trials."""
    plan = prepare(resolved, registry)
    config = plan.config
    seconds: dict[str, list[float]] = defaultdict(list)
    study_started = time.perf_counter()
    log.info(f"study {plan.study_name} (resume or extend it with study.name={plan.study_name})")

    search = OptunaSearch(config.search, plan.study_name, config.study.storage, plan.objectives, plan.directions)
    queued = search.enqueue_baselines(plan.baselines, config.search.n_trials)
    if queued:
        names = ", ".join(baseline.name for baseline in queued)
        log.info(f"baselines: {len(queued)} of {len(plan.baselines)} queued ahead of the sampler: {names}")
    done = search.count_complete()
    missing = config.search.n_trials - done
    # Load and calibrate before touching MLflow, so a bad model leaves no empty parent run behind.
    pending = search.waiting_baselines(plan.baselines)
    context = build_context(plan, seconds, pending) if missing > 0 else None
    if context is not None:
        prepare_compressors(plan, context, seconds, pending)
    started = time.perf_counter()
    tracker = _open_tracking(plan, search)
    seconds["tracking_once"].append(time.perf_counter() - started)

    run = _StudyRun(plan, search, tracker, context, seconds)
    max_failures = config.search.max_failures or config.search.n_trials
    if context is None:
        log.info(
            f"study {plan.study_name} already has {done} of {config.search.n_trials} completed trials; nothing to run"
        )
    else:
        arrows = " ".join(f"{o}{'↓' if d == 'minimize' else '↑'}" for o, d in zip(plan.objectives, plan.directions))
        log.info(
            f"search: {config.search.sampler}, {missing} trials to run ({done} of {config.search.n_trials} complete), objectives {arrows}"
        )
        try:
            while done < config.search.n_trials and run.failures < max_failures:
                done += run.one_trial(done)
        except KeyboardInterrupt:
            tracker.abort_study()
            raise AutopruneError(f"interrupted; resume with study.name={plan.study_name}") from None

    started = time.perf_counter()
    completed = search.completed()
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
    front = pareto_front({t.number: t.values for t in completed}, plan.directions)
    stopped = run.failures >= max_failures
    run_ids = {t.number: t.run_id for t in completed if t.run_id}
    layers = {t.number: t.layers for t in completed if t.layers}
    tracker.finish_study(
        rows, front, plan.objectives, plan.directions, run_ids, layers, status="FAILED" if stopped else "FINISHED"
    )
    seconds["tracking_once"].append(time.perf_counter() - started)
    seconds["total"].append(time.perf_counter() - study_started)
    _report(plan, rows, front, tracker.parent_id)
    if stopped:
        raise AutopruneError(
            f"stopped after {run.failures} failed trials (search.max_failures={max_failures}); last error: {run.last_error}"
        )
    return StudyResult(plan.study_name, tracker.parent_id, rows, front, run.ran, seconds)
